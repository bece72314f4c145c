import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { BatchV1Api, CoreV1Api, KubeConfig, V1Job, V1Pod, V1Secret, V1Volume } from '@kubernetes/client-node';
import { backendFromEnv, type BackendRequest, type EngineBackend } from '../engine/tfjs/backend.js';
import { WEBGPU_DRIVER_CAPABILITIES } from '../engine/tfjs/webgpu.js';
import { LatheError } from '../errors.js';
import { lockPipeline, lockRecipe, type AnyLock } from '../recipe/lock.js';
import type { Pipeline, Recipe } from '../runs/recipe.js';
import type { ResolvedPipeline, ResolvedRecipe } from '../recipe/schema.js';
import type { Run } from '../runs/run.js';
import { RunDir, type RunSummary } from '../runs/rundir.js';
import { readTokenFile } from '../worker/auth.js';
import { WorkerClient } from '../worker/client.js';
import { isWorkerPath, recipePathFields } from '../worker/paths.js';
import type { StartOptions } from '../runs/run.js';
import { attachRemoteRun, submitLock, withSteps, type LockingExecutor, type RemoteStartOptions } from './worker.js';

// Kubernetes: each run is a batch/v1 Job whose pod runs a worker for that run (`lathe worker --once`),
// asking for GPUs as a resource (nvidia.com/gpu), reading its token from a Secret and its data from a
// read-only volume mounted as the worker's --data-root. The executor connects to the pod once it is
// running, submits the lock, streams the run and downloads it; cancel deletes the Job. Every call to
// the API server goes through @kubernetes/client-node (CoreV1Api, BatchV1Api), which handles the
// kubeconfig's auth (tokens, client certificates, exec plugins) and TLS.

/** Where the worker's data comes from: a PersistentVolumeClaim, an NFS export, or a node path. Mounted read-only at /data. */
export type DataVolume = { claimName: string } | { nfs: { server: string; path: string } } | { hostPath: string };

/** How to run workers as Kubernetes Jobs. */
export interface KubernetesOptions {
  /** The cluster: a KubeConfig, a kubeconfig file, or (default) $KUBECONFIG, ~/.kube/config or the pod's service account. */
  kubeconfig?: KubeConfig | string;
  /** Or the cluster's API server directly: its URL, a bearer token, and the CA (PEM) that signs its certificate. */
  cluster?: ClusterAccess;
  /** Or the service account of the pod this runs in (KUBERNETES_SERVICE_HOST and its token). */
  inCluster?: boolean;
  /** Namespace for the Job and its Secret (default: the kubeconfig context's, else "default"). */
  namespace?: string;
  /** A container image with lathe installed (its `lathe` command on the PATH, or set `command`). */
  image: string;
  /** The worker's token, or a file holding it; it goes into a Secret, never into the Job's spec. */
  token?: string;
  tokenFile?: string;
  /** GPUs per worker (default 1), requested as `gpuResource`. */
  gpus?: number;
  /** The extended resource name for GPUs (default nvidia.com/gpu). */
  gpuResource?: string;
  /** CPU and memory requests (and limits), e.g. "8" and "32Gi". */
  cpu?: string;
  memory?: string;
  /** The data volume (the worker's --data-root, read-only). */
  data?: DataVolume;
  /** Worker state (jobs, checkpoints): a PVC keeps it across pod restarts, so a restarted pod resumes the job; default an emptyDir. */
  state?: { claimName: string };
  /** The worker's port (default 8765). */
  port?: number;
  /** The worker's --backend (default webgpu with GPUs, else cpu). */
  backend?: BackendRequest;
  /** The command that runs lathe in the image (default ["lathe"]). */
  command?: string[];
  nodeSelector?: Record<string, string>;
  tolerations?: NonNullable<NonNullable<V1Job['spec']>['template']['spec']>['tolerations'];
  serviceAccountName?: string;
  /** How this client reaches a running pod (default ws://<pod IP>:<port>, i.e. from inside the cluster network). */
  url?: (pod: V1Pod, port: number) => string;
  /** How often to poll the pod (default 1 s). */
  pollMs?: number;
  /** Give up if the pod is not running after this long (default 1 h: GPU nodes may scale up first). */
  startTimeoutMs?: number;
}

/** Direct access to an API server (made into a KubeConfig with one cluster and one token user). */
export interface ClusterAccess {
  /** The API server's URL, e.g. https://k8s.example:6443. */
  server: string;
  /** A bearer token (a service account's, say). */
  token?: string;
  /** The CA certificate (PEM) that signs the server's certificate. */
  ca?: string | Buffer;
  /** Do not check the server's certificate (test clusters only). */
  skipTLSVerify?: boolean;
}

const LABEL = 'lathe.dev/run';
const TOKEN_DIR = '/var/run/lathe';

/** A DNS-1123 name for a run's Job: lathe-<name>-<random>, at most 63 characters. */
export function jobName(runName: string): string {
  const slug =
    runName
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 40) || 'run';
  return `lathe-${slug}-${randomBytes(4).toString('hex')}`.replace(/-+/g, '-');
}

/** The Secret and the Job for one run's worker (what the executor creates; pure, so it can be checked). */
export function jobManifests(
  name: string,
  o: KubernetesOptions & { token: string; backend: EngineBackend },
): { secret: V1Secret; job: V1Job } {
  const namespace = o.namespace ?? 'default';
  const port = o.port ?? 8765;
  const gpus = o.gpus ?? 1;
  const labels = { 'app.kubernetes.io/name': 'lathe-worker', 'app.kubernetes.io/managed-by': 'lathe', [LABEL]: name };
  const secretName = `${name}-token`;
  const volumes: V1Volume[] = [
    { name: 'token', secret: { secretName, defaultMode: 0o400 } },
    o.state
      ? { name: 'state', persistentVolumeClaim: { claimName: o.state.claimName } }
      : { name: 'state', emptyDir: {} },
  ];
  const mounts = [
    { name: 'token', mountPath: TOKEN_DIR, readOnly: true },
    { name: 'state', mountPath: '/state' },
  ];
  if (o.data) {
    const d = o.data;
    volumes.push(
      'claimName' in d
        ? { name: 'data', persistentVolumeClaim: { claimName: d.claimName, readOnly: true } }
        : 'nfs' in d
          ? { name: 'data', nfs: { server: d.nfs.server, path: d.nfs.path, readOnly: true } }
          : { name: 'data', hostPath: { path: d.hostPath, type: 'Directory' } },
    );
    mounts.push({ name: 'data', mountPath: '/data', readOnly: true });
  }
  const limits: Record<string, string> = {};
  const requests: Record<string, string> = {};
  if (gpus > 0) limits[o.gpuResource ?? 'nvidia.com/gpu'] = String(gpus);
  if (o.cpu) limits.cpu = requests.cpu = o.cpu;
  if (o.memory) limits.memory = requests.memory = o.memory;
  const args = [
    'worker',
    '--listen',
    `0.0.0.0:${port}`,
    '--token-file',
    `${TOKEN_DIR}/token`,
    '--state-dir',
    '/state',
    '--backend',
    o.backend,
    '--once',
  ];
  if (o.data) args.push('--data-root', '/data');
  const secret: V1Secret = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: secretName, namespace, labels },
    type: 'Opaque',
    data: { token: Buffer.from(o.token).toString('base64') },
  };
  const job: V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, namespace, labels },
    spec: {
      // With a state volume a new pod resumes the job from its checkpoint; without one a retry would start over.
      backoffLimit: o.state ? 3 : 0,
      ttlSecondsAfterFinished: 3600,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          serviceAccountName: o.serviceAccountName,
          nodeSelector: o.nodeSelector,
          tolerations: o.tolerations,
          containers: [
            {
              name: 'worker',
              image: o.image,
              command: [...(o.command ?? ['lathe']), ...args],
              ports: [{ name: 'lathe', containerPort: port }],
              // Vulkan (Dawn's backend) needs the driver's graphics libraries mounted into the container.
              env:
                o.backend === 'webgpu'
                  ? [{ name: 'NVIDIA_DRIVER_CAPABILITIES', value: WEBGPU_DRIVER_CAPABILITIES }]
                  : undefined,
              resources: { limits, requests: Object.keys(requests).length ? requests : undefined },
              volumeMounts: mounts,
              readinessProbe: { tcpSocket: { port }, periodSeconds: 2 },
            },
          ],
          volumes,
        },
      },
    },
  };
  return { secret, job };
}

/** The executor that runs each job as a Kubernetes Job holding a worker. */
export class KubernetesExecutor implements LockingExecutor {
  readonly name = 'kubernetes';
  readonly opts: KubernetesOptions;
  private token: string;
  private apiPromise?: Promise<KubeApis>;

  constructor(opts: KubernetesOptions) {
    this.opts = opts;
    const token = opts.token ?? (opts.tokenFile ? readTokenFile(opts.tokenFile, 'tokenFile') : undefined);
    if (!token) throw new LatheError('kubernetes: give the worker token as token or tokenFile');
    this.token = token;
  }

  /** The API clients and namespace, made once from the options' KubeConfig. */
  api(): Promise<KubeApis> {
    if (!this.apiPromise) {
      const p = kubeApis(this.opts);
      // A bad kubeconfig is reported again next time, not cached.
      p.catch(() => this.apiPromise === p && (this.apiPromise = undefined));
      this.apiPromise = p;
    }
    return this.apiPromise;
  }

  /** The namespace Jobs go to (the option's, else the kubeconfig context's, else "default"). */
  async namespace(): Promise<string> {
    return (await this.api()).namespace;
  }

  /** The backend the worker will use: a named one as asked, else the executor's, else webgpu with GPUs and cpu without. */
  backendFor(request: BackendRequest | undefined): EngineBackend {
    if (request && request !== 'auto') return request;
    if (this.opts.backend && this.opts.backend !== 'auto') return this.opts.backend;
    return (this.opts.gpus ?? 1) > 0 ? 'webgpu' : 'cpu';
  }

  /** Locks a recipe here, for the backend the pod will use. */
  async lockRecipe(
    recipe: Recipe | Pipeline,
    opts: { steps?: number; backend?: BackendRequest } = {},
  ): Promise<AnyLock> {
    const backend = this.backendFor(
      opts.backend ?? backendFromEnv() ?? (recipe.input as { backend?: BackendRequest }).backend,
    );
    const config = withSteps({ ...recipe.config, backend } as ResolvedRecipe | ResolvedPipeline, opts.steps);
    const bad = recipePathFields(config as unknown as Record<string, unknown>).find((f) => isWorkerPath(f.value));
    if (bad)
      throw new LatheError(
        `${bad.where}: worker: data is not supported through Kubernetes yet; upload it (name a local file)`,
      );
    return config.stage === 'pipeline'
      ? lockPipeline(config as ResolvedPipeline, { baseDir: recipe.baseDir, backend })
      : lockRecipe(config as ResolvedRecipe, { baseDir: recipe.baseDir, backend });
  }

  /** Creates the Secret and the Job for a run's worker; returns the Job's name. */
  async create(lock: AnyLock): Promise<string> {
    const { core, batch, namespace } = await this.api();
    const name = jobName(lock.recipe.name ?? lock.recipe.stage);
    const { secret, job } = jobManifests(name, { ...this.opts, namespace, token: this.token, backend: lock.backend });
    await core.createNamespacedSecret({ namespace, body: secret }).catch((e: unknown) => {
      throw new LatheError(
        `kubernetes: creating Secret ${secret.metadata!.name} in ${namespace} failed: ${apiErrorMessage(e)}`,
        1,
      );
    });
    await batch.createNamespacedJob({ namespace, body: job }).catch(async (e: unknown) => {
      await this.deleteSecret(name);
      throw new LatheError(`kubernetes: creating Job ${name} in ${namespace} failed: ${apiErrorMessage(e)}`, 1);
    });
    return name;
  }

  /** The Job's state: active, succeeded or failed pod counts, as the API server reports them. */
  async state(name: string): Promise<{ active: number; succeeded: number; failed: number }> {
    const { batch, namespace } = await this.api();
    const j = await batch.readNamespacedJob({ namespace, name }).catch((e: unknown) => {
      throw new LatheError(`kubernetes: reading Job ${name} in ${namespace} failed: ${apiErrorMessage(e)}`, 1);
    });
    return { active: j.status?.active ?? 0, succeeded: j.status?.succeeded ?? 0, failed: j.status?.failed ?? 0 };
  }

  /** Deletes a run's Job with its pods (background propagation; the worker checkpoints on SIGTERM) and its Secret. A Job already gone is no error. */
  async cancel(name: string): Promise<void> {
    const { batch, namespace } = await this.api();
    await batch.deleteNamespacedJob({ namespace, name, propagationPolicy: 'Background' }).catch((e: unknown) => {
      if (!notFound(e))
        throw new LatheError(`kubernetes: deleting Job ${name} in ${namespace} failed: ${apiErrorMessage(e)}`, 1);
    });
    await this.deleteSecret(name);
  }

  // The token Secret goes once the worker has it no more use (or the Job failed to be created); best effort.
  private async deleteSecret(name: string): Promise<void> {
    const { core, namespace } = await this.api();
    await core.deleteNamespacedSecret({ namespace, name: `${name}-token` }).catch(() => {});
  }

  /** Waits for the Job's pod to run, and returns the URL of its worker. */
  private async waitForPod(name: string): Promise<string> {
    const { core, namespace } = await this.api();
    const port = this.opts.port ?? 8765;
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 3600_000);
    for (;;) {
      const pods = await core
        .listNamespacedPod({ namespace, labelSelector: `job-name=${name}` })
        .catch((e: unknown) => {
          throw new LatheError(
            `kubernetes: listing the pods of Job ${name} in ${namespace} failed: ${apiErrorMessage(e)}`,
            1,
          );
        });
      const pod = pods.items.find(
        (p) =>
          p.status?.phase === 'Running' &&
          p.status.podIP &&
          p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      );
      if (pod) return this.opts.url ? this.opts.url(pod, port) : `ws://${pod.status!.podIP}:${port}`;
      const ended = pods.items.find((p) => p.status?.phase === 'Failed' || p.status?.phase === 'Succeeded');
      if (ended) {
        const why = ended.status?.containerStatuses?.[0]?.state?.terminated;
        throw new LatheError(
          `kubernetes: pod ${ended.metadata?.name} of Job ${name} ${ended.status?.phase?.toLowerCase()} before its worker started${why ? ` (${why.reason ?? ''} exit ${why.exitCode}: ${why.message ?? ''})` : ''}`,
          1,
        );
      }
      if (Date.now() > deadline) {
        await this.cancel(name).catch(() => {});
        throw new LatheError(
          `kubernetes: Job ${name} had no running pod in time (waiting: ${pods.items.map((p) => p.status?.phase).join(', ') || 'no pod yet'}); deleted it`,
          1,
        );
      }
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 1000));
    }
  }

  /** Creates the Job, then submits the lock to its worker once the pod runs; the Run is live at once. */
  async start(lock: AnyLock, opts: RemoteStartOptions = {}): Promise<Run> {
    const rd = await RunDir.create(lock, opts.out);
    const name = await this.create(lock).catch(async (e: unknown) => {
      await rm(rd.path, { recursive: true, force: true });
      throw e;
    });
    const namespace = await this.namespace();
    opts.onNotice?.(`kubernetes: Job ${namespace}/${name} created`);
    const record = (extra: Record<string, unknown>) =>
      writeFile(join(rd.path, 'kubernetes.json'), JSON.stringify({ namespace, job: name, ...extra }, null, 2) + '\n');
    await record({});
    let cancelled = false;
    const source = (async () => {
      const url = await this.waitForPod(name).catch((e: Error) => {
        throw cancelled ? new LatheError(`kubernetes: Job ${name} was deleted before its worker started`, 1) : e;
      });
      opts.onNotice?.(`kubernetes: worker at ${url}`);
      let client: WorkerClient | undefined;
      // The pod is Ready once the port accepts connections; retry briefly in case the probe was early.
      for (let i = 0; !client; i++) {
        try {
          client = await WorkerClient.connect(url, { token: this.token, log: opts.onNotice });
        } catch (e) {
          if (i >= 20) throw e;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      const { job } = await submitLock(client, lock, opts);
      return {
        client,
        job: job.id,
        after: async (s: RunSummary) => {
          // A cancelled run's Job goes before we leave (its --once worker would otherwise end by itself, "succeeded").
          if (s.status === 'cancelled') await this.cancel(name).catch(() => {});
          else await this.deleteSecret(name);
          client!.close();
          await record({ worker: url, status: s.status });
        },
      };
    })();
    return attachRemoteRun(rd, lock, source, {
      onNotice: opts.onNotice,
      onCancel: async () => {
        cancelled = true;
        await this.cancel(name);
      },
    });
  }

  /** Not yet: with a state volume, Kubernetes restarts a failed pod (backoffLimit) and its worker resumes the job by itself. */
  async resume(runDir: string, _opts: Omit<StartOptions, 'out'> = {}): Promise<Run> {
    throw new LatheError(
      `${runDir}: resuming through Kubernetes is not supported yet; give the executor a state volume (state: { claimName }) and the Job's retries resume the run by themselves`,
    );
  }
}

// ---- talking to the API server, through @kubernetes/client-node ----

/** The clients the executor uses, made from one KubeConfig, and the namespace it works in. */
export interface KubeApis {
  kc: KubeConfig;
  core: CoreV1Api;
  batch: BatchV1Api;
  namespace: string;
}

// The service account files a pod gets (what KubeConfig.loadFromCluster reads).
const SERVICE_ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * The cluster's KubeConfig: the one given; one built from `cluster`; a kubeconfig file; the pod's
 * service account (`inCluster`); or kubectl's lookup ($KUBECONFIG, ~/.kube/config, else the service
 * account). The library is imported here, on first use, so that importing lathe stays quick.
 */
export async function loadKubeConfig(
  o: Pick<KubernetesOptions, 'kubeconfig' | 'cluster' | 'inCluster'>,
): Promise<KubeConfig> {
  // Duck-typed: a KubeConfig from another copy of the library is not an instance of ours.
  if (
    o.kubeconfig &&
    typeof o.kubeconfig === 'object' &&
    typeof (o.kubeconfig as KubeConfig).makeApiClient === 'function'
  )
    return o.kubeconfig;
  const k8s = await import('@kubernetes/client-node');
  const kc = new k8s.KubeConfig();
  if (o.cluster) {
    const c = o.cluster;
    kc.loadFromClusterAndUser(
      {
        name: 'cluster',
        server: c.server,
        caData: c.ca ? Buffer.from(c.ca).toString('base64') : undefined,
        skipTLSVerify: !!c.skipTLSVerify,
      },
      { name: 'user', token: c.token },
    );
  } else if (typeof o.kubeconfig === 'string') {
    const file = o.kubeconfig;
    if (!existsSync(file)) throw new LatheError(`kubeconfig ${file}: no such file`);
    try {
      kc.loadFromFile(file);
    } catch (e) {
      throw new LatheError(`kubeconfig ${file}: ${(e as Error).message}`);
    }
  } else if (o.inCluster) {
    if (!process.env.KUBERNETES_SERVICE_HOST || !existsSync(`${SERVICE_ACCOUNT}/token`)) {
      throw new LatheError(
        `kubernetes: inCluster, but this is not a pod (no KUBERNETES_SERVICE_HOST or no ${SERVICE_ACCOUNT}/token)`,
      );
    }
    kc.loadFromCluster();
  } else {
    // loadFromDefault would fall back to http://localhost:8080 when it finds nothing; say so instead.
    const home = join(homedir(), '.kube', 'config');
    if (!process.env.KUBECONFIG && !existsSync(home) && !existsSync(`${SERVICE_ACCOUNT}/token`)) {
      throw new LatheError(
        `kubernetes: no cluster to talk to: no $KUBECONFIG, no ${home}, and not inside a pod; pass kubeconfig (a file or a KubeConfig) or cluster: { server, token, ca }`,
      );
    }
    kc.loadFromDefault();
  }
  if (!kc.getCurrentCluster())
    throw new LatheError(
      `kubernetes: the kubeconfig has no current context with a cluster${typeof o.kubeconfig === 'string' ? ` (${o.kubeconfig})` : ''}`,
    );
  return kc;
}

/** CoreV1Api and BatchV1Api on the cluster; the namespace is the option's, else the context's, else "default". */
export async function kubeApis(
  o: Pick<KubernetesOptions, 'kubeconfig' | 'cluster' | 'inCluster' | 'namespace'>,
): Promise<KubeApis> {
  const kc = await loadKubeConfig(o);
  const k8s = await import('@kubernetes/client-node');
  const namespace = o.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  return { kc, core: kc.makeApiClient(k8s.CoreV1Api), batch: kc.makeApiClient(k8s.BatchV1Api), namespace };
}

/** The API server's answer to a failed call, in a sentence: its HTTP code and Status message (the library's own message carries every header). */
export function apiErrorMessage(e: unknown): string {
  const x = e as { code?: unknown; body?: unknown; message?: string };
  if (typeof x.code !== 'number') return x.message ?? String(e);
  let message: string | undefined;
  try {
    const body =
      typeof x.body === 'string'
        ? (JSON.parse(x.body) as { message?: string })
        : (x.body as { message?: string } | undefined);
    message = body?.message;
  } catch {
    message = typeof x.body === 'string' ? x.body.slice(0, 200) : undefined;
  }
  return `HTTP ${x.code}${message ? `: ${message}` : ''}`;
}

/** True for the API server's 404 (the object is already gone). */
function notFound(e: unknown): boolean {
  return (e as { code?: unknown }).code === 404;
}

/** An executor that runs each job as a Kubernetes Job: `r.run({ on: workers.kubernetes({ image, tokenFile, gpus: 1, data: { claimName } }) })`. */
export function kubernetes(opts: KubernetesOptions): KubernetesExecutor {
  return new KubernetesExecutor(opts);
}

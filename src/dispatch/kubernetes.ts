import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type {
  BatchV1Api,
  CoreV1Api,
  KubeConfig,
  V1EnvVar,
  V1Job,
  V1Pod,
  V1Probe,
  V1Secret,
  V1Service,
  V1Volume,
} from '@kubernetes/client-node';
import type { BackendRequest, EngineBackend } from '../engine/tfjs/backend.js';
import { WEBGPU_DRIVER_CAPABILITIES } from '../engine/tfjs/webgpu.js';
import { LatheError } from '../errors.js';
import type { AnyLock, EngineLock } from '../recipe/lock.js';
import type { Resources } from '../recipe/schema.js';
import type { Pipeline, Recipe } from '../runs/recipe.js';
import type { Run } from '../runs/run.js';
import { RunDir, type RunSummary } from '../runs/rundir.js';
import { readTokenFile } from '../worker/auth.js';
import { WorkerClient } from '../worker/client.js';
import type { StartOptions } from '../runs/run.js';
import { lockAhead } from './lock-ahead.js';
import {
  attachRemoteRun,
  submitLock,
  type LockingExecutor,
  type RemoteLockOptions,
  type RemoteStartOptions,
} from './worker.js';

// Kubernetes: each run is a batch/v1 Job whose pod runs a worker for that run (`lathe worker --once`),
// asking for GPUs as a resource (nvidia.com/gpu), reading its token from a Secret and its data from a
// read-only volume mounted as the worker's --data-root. The executor connects to the pod once it is
// running, submits the lock, streams the run and downloads it; cancel deletes the Job. Every call to
// the API server goes through @kubernetes/client-node (CoreV1Api, BatchV1Api), which handles the
// kubeconfig's auth (tokens, client certificates, exec plugins) and TLS.
// A torch run over several nodes is an Indexed Job of one pod per node behind a headless Service:
// pod 0 runs the worker, whose trainer holds the c10d rendezvous and rank 0's report port; the
// other pods run `lathe engine-node`, which joins every rendezvous the trainer starts (restarts too).
// The Job succeeds when pod 0 does.

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
  /** Multi-node torch runs: the c10d rendezvous port and rank 0's report port on pod 0 (default 29400, 29500). */
  rdzvPort?: number;
  enginePort?: number;
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
/** Set by the Job controller on an Indexed Job's pods. */
const INDEX_LABEL = 'batch.kubernetes.io/job-completion-index';

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

/** What a run's lock asks of its pods: the torch engine, and ranks over nodes. */
export interface PodRequest {
  backend: EngineBackend;
  engine?: EngineLock;
  resources?: Resources;
  /** The secret rank 0 shows the trainer (multi-node: it goes into the Secret, key engine-secret). */
  engineSecret?: string;
}

/** The key of a Job's Secret that holds the multi-node run's engine secret. */
const ENGINE_SECRET_KEY = 'engine-secret';

/**
 * The Secret, the Job and (over several nodes) the headless Service for one run's worker: what the
 * executor creates; pure, so it can be checked.
 */
export function jobManifests(
  name: string,
  o: KubernetesOptions & { token: string } & PodRequest,
): { secret: V1Secret; job: V1Job; service?: V1Service } {
  const namespace = o.namespace ?? 'default';
  const port = o.port ?? 8765;
  const res = o.engine ? o.resources : undefined;
  const nodes = res?.nodes ?? 1;
  const gpus = o.engine?.device === 'cuda' && res ? Math.max(res.gpus, o.gpus ?? 0) : (o.gpus ?? 1);
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
  if (o.engine) args.push('--engine', 'torch', '--device', o.engine.device, '--dtype', o.engine.dtype);
  if (o.data) args.push('--data-root', '/data');
  const lathe = o.command ?? ['lathe'];
  const data: Record<string, string> = { token: Buffer.from(o.token).toString('base64') };
  let command = [...lathe, ...args];
  let env: V1EnvVar[] | undefined;
  let probe: V1Probe = { tcpSocket: { port }, periodSeconds: 2 };
  let service: V1Service | undefined;
  if (nodes > 1 && res) {
    if (!o.engineSecret) throw new LatheError('kubernetes: a multi-node run needs an engine secret');
    data[ENGINE_SECRET_KEY] = Buffer.from(o.engineSecret).toString('base64');
    const first = `${name}-0.${name}`;
    env = [
      { name: 'LATHE_RDZV_ENDPOINT', value: `${first}:${o.rdzvPort ?? 29400}` },
      { name: 'LATHE_RDZV_ID', value: name },
      { name: 'LATHE_HOST', value: first },
      { name: 'LATHE_ENGINE_PORT', value: String(o.enginePort ?? 29500) },
      { name: 'LATHE_ENGINE_ADDR', value: `${first}:${o.enginePort ?? 29500}` },
      { name: 'LATHE_ENGINE_SECRET', valueFrom: { secretKeyRef: { name: secretName, key: ENGINE_SECRET_KEY } } },
    ];
    const node = [
      ...lathe,
      'engine-node',
      '--gpus',
      String(res.gpus),
      '--nodes',
      String(nodes),
      '--parallel',
      res.parallel,
      '--device',
      o.engine!.device,
      '--timeout-seconds',
      String(res.timeoutSeconds),
    ];
    // One template for every index: pod 0 is the worker, the others its ranks' nodes.
    command = [
      '/bin/sh',
      '-c',
      `if [ "$JOB_COMPLETION_INDEX" = 0 ]; then exec ${shellJoin(lathe.concat(args))}; else exec ${shellJoin(node)}; fi`,
    ];
    // Only pod 0 listens; the others are ready as soon as they run.
    const check = `require('net').connect(${port},'127.0.0.1').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))`;
    probe = {
      exec: { command: ['/bin/sh', '-c', `[ "$JOB_COMPLETION_INDEX" != 0 ] || exec node -e "${check}"`] },
      periodSeconds: 5,
    };
    service = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace, labels },
      spec: {
        clusterIP: 'None',
        // The rendezvous name must resolve before pod 0 is ready (its worker starts the trainer later).
        publishNotReadyAddresses: true,
        selector: { [LABEL]: name },
        ports: [
          { name: 'rdzv', port: o.rdzvPort ?? 29400 },
          { name: 'engine', port: o.enginePort ?? 29500 },
        ],
      },
    };
  }
  const secret: V1Secret = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: secretName, namespace, labels },
    type: 'Opaque',
    data,
  };
  const job: V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, namespace, labels },
    spec: {
      // With a state volume a new pod resumes the job from its checkpoint; without one a retry would
      // start over. A replaced rank pod rejoins when the trainer restarts (resources.restarts).
      backoffLimit: (o.state ? 3 : 0) + (service ? res!.restarts : 0),
      ttlSecondsAfterFinished: 3600,
      ...(service
        ? {
            completionMode: 'Indexed',
            completions: nodes,
            parallelism: nodes,
            successPolicy: { rules: [{ succeededIndexes: '0' }] },
          }
        : {}),
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          // Pods named <job>-<index>.<service>: how the others find pod 0.
          subdomain: service ? name : undefined,
          serviceAccountName: o.serviceAccountName,
          nodeSelector: o.nodeSelector,
          tolerations: o.tolerations,
          containers: [
            {
              name: 'worker',
              image: o.image,
              command,
              // Vulkan (Dawn's backend) needs the driver's graphics libraries mounted into the container.
              env:
                o.backend === 'webgpu'
                  ? [...(env ?? []), { name: 'NVIDIA_DRIVER_CAPABILITIES', value: WEBGPU_DRIVER_CAPABILITIES }]
                  : env,
              ports: [{ name: 'lathe', containerPort: port }],
              resources: { limits, requests: Object.keys(requests).length ? requests : undefined },
              volumeMounts: mounts,
              readinessProbe: probe,
            },
          ],
          volumes,
        },
      },
    },
  };
  return { secret, job, service };
}

/** argv as one POSIX shell line. */
function shellJoin(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** The executor that runs each job as a Kubernetes Job holding a worker. */
export class KubernetesExecutor implements LockingExecutor {
  readonly name = 'kubernetes';
  readonly opts: KubernetesOptions;
  private token: string;
  private apiPromise?: Promise<KubeApis>;
  // Jobs this executor made with a headless Service (multi-node).
  private services = new Set<string>();

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

  /** Locks a recipe here, for the backend (or torch engine) and resources the pods will use. */
  lockRecipe(recipe: Recipe | Pipeline, opts: RemoteLockOptions = {}): Promise<AnyLock> {
    return lockAhead(recipe, opts, {
      backendFor: (b: BackendRequest | undefined) => this.backendFor(b),
      defaultDevice: (this.opts.gpus ?? 1) > 0 ? 'cuda' : 'cpu',
      where: 'Kubernetes (upload it: name a local file)',
    });
  }

  /** Creates the Secret and the Job for a run's worker; returns the Job's name. */
  async create(lock: AnyLock): Promise<string> {
    const { core, batch, namespace } = await this.api();
    const name = jobName(lock.recipe.name ?? lock.recipe.stage);
    const { secret, job, service } = jobManifests(name, {
      ...this.opts,
      namespace,
      token: this.token,
      backend: lock.backend,
      engine: lock.engine,
      resources: lock.recipe.resources,
      engineSecret: randomBytes(24).toString('hex'),
    });
    await core.createNamespacedSecret({ namespace, body: secret }).catch((e: unknown) => {
      throw new LatheError(
        `kubernetes: creating Secret ${secret.metadata!.name} in ${namespace} failed: ${apiErrorMessage(e)}`,
        1,
      );
    });
    if (service)
      await core
        .createNamespacedService({ namespace, body: service })
        .then(() => this.services.add(name))
        .catch(async (e: unknown) => {
          await this.deleteSecret(name);
          throw new LatheError(`kubernetes: creating Service ${name} in ${namespace} failed: ${apiErrorMessage(e)}`, 1);
        });
    await batch.createNamespacedJob({ namespace, body: job }).catch(async (e: unknown) => {
      await this.deleteSecret(name);
      if (service) await this.deleteService(name);
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
    if (this.services.has(name)) await this.deleteService(name);
  }

  // A multi-node run's headless Service (none for one node: not found is no error); best effort.
  private async deleteService(name: string): Promise<void> {
    const { core, namespace } = await this.api();
    this.services.delete(name);
    await core.deleteNamespacedService({ namespace, name }).catch(() => {});
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
          (p.metadata?.labels?.[INDEX_LABEL] ?? '0') === '0' &&
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
    const service = (lock.engine && (lock.recipe.resources?.nodes ?? 1) > 1) || false;
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
          else await Promise.all([this.deleteSecret(name), service ? this.deleteService(name) : undefined]);
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

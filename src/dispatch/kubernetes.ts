import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeConfig, V1Job, V1Pod, V1Secret, V1Volume } from '@kubernetes/client-node';
import { backendFromEnv, type BackendRequest, type EngineBackend } from '../backend/select.js';
import { LatheError } from '../errors.js';
import { lockPipeline, lockRecipe, type AnyLock } from '../recipe/lock.js';
import type { Pipeline, Recipe } from '../recipe/recipe.js';
import type { ResolvedPipeline, ResolvedRecipe } from '../recipe/schema.js';
import type { Run } from '../runs/run.js';
import { RunDir, type RunSummary } from '../runs/rundir.js';
import { readTokenFile } from '../worker/auth.js';
import { WorkerClient } from '../worker/client.js';
import { isWorkerPath, recipePathFields } from '../worker/paths.js';
import type { StartOptions } from './executor.js';
import { attachRemoteRun, submitLock, withSteps, type LockingExecutor, type RemoteStartOptions } from './worker.js';

// Kubernetes: each run is a batch/v1 Job whose pod runs a worker for that run (`lathe worker --once`),
// asking for GPUs as a resource (nvidia.com/gpu), reading its token from a Secret and its data from a
// read-only volume mounted as the worker's --data-root. The executor connects to the pod once it is
// running, submits the lock, streams the run and downloads it; cancel deletes the Job.

/** Where the worker's data comes from: a PersistentVolumeClaim, an NFS export, or a node path. Mounted read-only at /data. */
export type DataVolume = { claimName: string } | { nfs: { server: string; path: string } } | { hostPath: string };

/** How to run workers as Kubernetes Jobs. */
export interface KubernetesOptions {
  /** The cluster: a KubeConfig, a kubeconfig file, or (default) $KUBECONFIG, ~/.kube/config or the in-cluster account. */
  kubeconfig?: KubeConfig | string;
  /** Or the cluster's API server directly: its URL, a bearer token, and the CA (PEM) that signs its certificate. */
  cluster?: ClusterAccess;
  /** Namespace for the Job and its Secret (default "default"). */
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

/** Direct access to an API server. */
export interface ClusterAccess {
  server: string;
  token?: string;
  ca?: string | Buffer;
  skipTLSVerify?: boolean;
}

const LABEL = 'lathe.dev/run';
const TOKEN_DIR = '/var/run/lathe';

/** A DNS-1123 name for a run's Job: lathe-<name>-<random>, at most 63 characters. */
export function jobName(runName: string): string {
  const slug = runName.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'run';
  return `lathe-${slug}-${randomBytes(4).toString('hex')}`.replace(/-+/g, '-');
}

/** The Secret and the Job for one run's worker (what the executor creates; pure, so it can be checked). */
export function jobManifests(name: string, o: KubernetesOptions & { token: string; backend: EngineBackend }): { secret: V1Secret; job: V1Job } {
  const namespace = o.namespace ?? 'default';
  const port = o.port ?? 8765;
  const gpus = o.gpus ?? 1;
  const labels = { 'app.kubernetes.io/name': 'lathe-worker', 'app.kubernetes.io/managed-by': 'lathe', [LABEL]: name };
  const secretName = `${name}-token`;
  const volumes: V1Volume[] = [
    { name: 'token', secret: { secretName, defaultMode: 0o400 } },
    o.state ? { name: 'state', persistentVolumeClaim: { claimName: o.state.claimName } } : { name: 'state', emptyDir: {} },
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
  const args = ['worker', '--listen', `0.0.0.0:${port}`, '--token-file', `${TOKEN_DIR}/token`, '--state-dir', '/state', '--backend', o.backend, '--once'];
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
  private apis?: Promise<KubeApi>;

  constructor(opts: KubernetesOptions) {
    this.opts = opts;
    const token = opts.token ?? (opts.tokenFile ? readTokenFile(opts.tokenFile, 'tokenFile') : undefined);
    if (!token) throw new LatheError('kubernetes: give the worker token as token or tokenFile');
    this.token = token;
  }

  private get namespace(): string {
    return this.opts.namespace ?? 'default';
  }

  /** Which client talks to the API server: @kubernetes/client-node, or (where it cannot load) the built-in REST client. */
  async client(): Promise<KubeApi['kind']> {
    return (await this.api()).kind;
  }

  private api(): Promise<KubeApi> {
    this.apis ??= connectApi(this.opts);
    return this.apis;
  }

  /** The backend the worker will use: a named one as asked, else the executor's, else webgpu with GPUs and cpu without. */
  backendFor(request: BackendRequest | undefined): EngineBackend {
    if (request && request !== 'auto') return request;
    if (this.opts.backend && this.opts.backend !== 'auto') return this.opts.backend;
    return (this.opts.gpus ?? 1) > 0 ? 'webgpu' : 'cpu';
  }

  /** Locks a recipe here, for the backend the pod will use. */
  async lockRecipe(recipe: Recipe | Pipeline, opts: { steps?: number; backend?: BackendRequest } = {}): Promise<AnyLock> {
    const backend = this.backendFor(opts.backend ?? backendFromEnv() ?? (recipe.input as { backend?: BackendRequest }).backend);
    const config = withSteps({ ...recipe.config, backend } as ResolvedRecipe | ResolvedPipeline, opts.steps);
    const bad = recipePathFields(config as unknown as Record<string, unknown>).find((f) => isWorkerPath(f.value));
    if (bad) throw new LatheError(`${bad.where}: worker: data is not supported through Kubernetes yet; upload it (name a local file)`);
    return config.stage === 'pipeline'
      ? lockPipeline(config as ResolvedPipeline, { baseDir: recipe.baseDir, backend })
      : lockRecipe(config as ResolvedRecipe, { baseDir: recipe.baseDir, backend });
  }

  /** Creates the Secret and the Job for a run's worker; returns the Job's name. */
  async create(lock: AnyLock): Promise<string> {
    const api = await this.api();
    const name = jobName(lock.recipe.name ?? lock.recipe.stage);
    const { secret, job } = jobManifests(name, { ...this.opts, token: this.token, backend: lock.backend });
    await api.createSecret(this.namespace, secret).catch((e: Error) => {
      throw new LatheError(`kubernetes: creating Secret ${secret.metadata!.name} in ${this.namespace} failed: ${e.message}`, 1);
    });
    await api.createJob(this.namespace, job).catch(async (e: Error) => {
      await api.deleteSecret(this.namespace, secret.metadata!.name!).catch(() => {});
      throw new LatheError(`kubernetes: creating Job ${name} in ${this.namespace} failed: ${e.message}`, 1);
    });
    return name;
  }

  /** The Job's state: active, succeeded or failed counts, as the API server reports them. */
  async state(name: string): Promise<{ active: number; succeeded: number; failed: number }> {
    const j = await (await this.api()).readJobStatus(this.namespace, name);
    return { active: j.status?.active ?? 0, succeeded: j.status?.succeeded ?? 0, failed: j.status?.failed ?? 0 };
  }

  /** Deletes a run's Job (its pod is stopped; the worker checkpoints on SIGTERM) and its Secret. */
  async cancel(name: string): Promise<void> {
    const api = await this.api();
    await api.deleteJob(this.namespace, name);
    await api.deleteSecret(this.namespace, `${name}-token`).catch(() => {});
  }

  /** Waits for the Job's pod to run, and returns the URL of its worker. */
  private async waitForPod(name: string): Promise<string> {
    const api = await this.api();
    const port = this.opts.port ?? 8765;
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 3600_000);
    for (;;) {
      const pods = await api.listPods(this.namespace, `job-name=${name}`);
      const pod = pods.items.find((p) => p.status?.phase === 'Running' && p.status.podIP && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
      if (pod) return this.opts.url ? this.opts.url(pod, port) : `ws://${pod.status!.podIP}:${port}`;
      const ended = pods.items.find((p) => p.status?.phase === 'Failed' || p.status?.phase === 'Succeeded');
      if (ended) {
        const why = ended.status?.containerStatuses?.[0]?.state?.terminated;
        throw new LatheError(`kubernetes: pod ${ended.metadata?.name} of Job ${name} ${ended.status?.phase?.toLowerCase()} before its worker started${why ? ` (${why.reason ?? ''} exit ${why.exitCode}: ${why.message ?? ''})` : ''}`, 1);
      }
      if (Date.now() > deadline) {
        await this.cancel(name).catch(() => {});
        throw new LatheError(`kubernetes: Job ${name} had no running pod in time (waiting: ${pods.items.map((p) => p.status?.phase).join(', ') || 'no pod yet'}); deleted it`, 1);
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
    opts.onNotice?.(`kubernetes: Job ${this.namespace}/${name} created`);
    const record = (extra: Record<string, unknown>) => writeFile(join(rd.path, 'kubernetes.json'), JSON.stringify({ namespace: this.namespace, job: name, ...extra }, null, 2) + '\n');
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
          client!.close();
          if (s.status === 'cancelled') await this.cancel(name).catch(() => {});
          else await (await this.api()).deleteSecret(this.namespace, `${name}-token`).catch(() => {});
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
    throw new LatheError(`${runDir}: resuming through Kubernetes is not supported yet; give the executor a state volume (state: { claimName }) and the Job's retries resume the run by themselves`);
  }
}

// ---- talking to the API server ----

/** The six calls the executor makes. */
export interface KubeApi {
  kind: 'client-node' | 'rest';
  createSecret(namespace: string, body: V1Secret): Promise<V1Secret>;
  createJob(namespace: string, body: V1Job): Promise<V1Job>;
  listPods(namespace: string, labelSelector: string): Promise<{ items: V1Pod[] }>;
  readJobStatus(namespace: string, name: string): Promise<V1Job>;
  deleteJob(namespace: string, name: string): Promise<void>;
  deleteSecret(namespace: string, name: string): Promise<void>;
}

/**
 * Connects to the API server through @kubernetes/client-node. That package (2.0.1) loads undici 8,
 * which needs Node >= 22.19; on an older Node it cannot even be imported, and we fall back to a small
 * REST client over node:https that makes the same calls (direct `cluster` access, a kubeconfig file
 * with token or client-certificate users, or the in-cluster service account).
 */
async function connectApi(o: KubernetesOptions): Promise<KubeApi> {
  let k8s: typeof import('@kubernetes/client-node') | undefined;
  let whyNot = '';
  // undici 8 calls these Node 22 APIs as it loads; without them importing the client throws.
  const zlib = await import('node:zlib');
  const wt = await import('node:worker_threads');
  if (typeof (zlib as { createZstdDecompress?: unknown }).createZstdDecompress !== 'function' || typeof (wt as { markAsUncloneable?: unknown }).markAsUncloneable !== 'function') {
    whyNot = `its undici 8 needs Node >= 22.19 (zlib.createZstdDecompress, worker_threads.markAsUncloneable)`;
  } else {
    try {
      k8s = await import('@kubernetes/client-node');
    } catch (e) {
      whyNot = (e as Error).message;
    }
  }
  if (k8s) {
    let kc: KubeConfig;
    if (o.kubeconfig instanceof k8s.KubeConfig) kc = o.kubeconfig;
    else {
      kc = new k8s.KubeConfig();
      if (o.cluster) {
        const c = o.cluster;
        kc.loadFromOptions({
          clusters: [{ name: 'c', server: c.server, caData: c.ca ? Buffer.from(c.ca).toString('base64') : undefined, skipTLSVerify: !!c.skipTLSVerify }],
          users: [{ name: 'u', token: c.token }],
          contexts: [{ name: 'c', cluster: 'c', user: 'u' }],
          currentContext: 'c',
        });
      } else if (typeof o.kubeconfig === 'string') kc.loadFromFile(o.kubeconfig);
      else kc.loadFromDefault();
    }
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const batch = kc.makeApiClient(k8s.BatchV1Api);
    return {
      kind: 'client-node',
      createSecret: (namespace, body) => core.createNamespacedSecret({ namespace, body }),
      createJob: (namespace, body) => batch.createNamespacedJob({ namespace, body }),
      listPods: (namespace, labelSelector) => core.listNamespacedPod({ namespace, labelSelector }),
      readJobStatus: (namespace, name) => batch.readNamespacedJobStatus({ namespace, name }),
      deleteJob: async (namespace, name) => void (await batch.deleteNamespacedJob({ namespace, name, propagationPolicy: 'Background' })),
      deleteSecret: async (namespace, name) => void (await core.deleteNamespacedSecret({ namespace, name })),
    };
  }
  if (o.kubeconfig !== undefined && typeof o.kubeconfig !== 'string') throw new LatheError(`kubernetes: @kubernetes/client-node cannot load on Node ${process.version} (${whyNot}); pass cluster: { server, token, ca } or a kubeconfig file instead of a KubeConfig`);
  return restApi(await clusterAccess(o));
}

/** The API server and credentials for the REST client: `cluster`, a kubeconfig file, or the in-cluster service account. */
async function clusterAccess(o: KubernetesOptions): Promise<ClusterAccess & { cert?: Buffer; key?: Buffer }> {
  if (o.cluster) return o.cluster;
  const { existsSync, readFileSync } = await import('node:fs');
  const sa = '/var/run/secrets/kubernetes.io/serviceaccount';
  const file = typeof o.kubeconfig === 'string' ? o.kubeconfig : (process.env.KUBECONFIG?.split(':')[0] ?? join(process.env.HOME ?? '', '.kube', 'config'));
  if (!existsSync(file)) {
    if (process.env.KUBERNETES_SERVICE_HOST && existsSync(`${sa}/token`)) {
      return { server: `https://${process.env.KUBERNETES_SERVICE_HOST}:${process.env.KUBERNETES_SERVICE_PORT ?? 443}`, token: readFileSync(`${sa}/token`, 'utf8').trim(), ca: readFileSync(`${sa}/ca.crt`) };
    }
    throw new LatheError(`kubernetes: no kubeconfig at ${file} and not inside a cluster; pass kubeconfig or cluster: { server, token, ca }`);
  }
  const YAML = (await import('yaml')).default;
  type Named<T> = { name: string } & T;
  const cfg = YAML.parse(readFileSync(file, 'utf8')) as {
    'current-context'?: string;
    contexts?: Named<{ context: { cluster: string; user: string } }>[];
    clusters?: Named<{ cluster: { server: string; 'certificate-authority'?: string; 'certificate-authority-data'?: string; 'insecure-skip-tls-verify'?: boolean } }>[];
    users?: Named<{ user: { token?: string; 'client-certificate'?: string; 'client-certificate-data'?: string; 'client-key'?: string; 'client-key-data'?: string; exec?: unknown } }>[];
  };
  const ctx = cfg.contexts?.find((c) => c.name === cfg['current-context'])?.context;
  const cluster = cfg.clusters?.find((c) => c.name === ctx?.cluster)?.cluster;
  const user = cfg.users?.find((u) => u.name === ctx?.user)?.user ?? {};
  if (!ctx || !cluster) throw new LatheError(`${file}: no current-context with a cluster`);
  if (user.exec) throw new LatheError(`${file}: user ${ctx.user} authenticates with an exec plugin, which needs @kubernetes/client-node (Node >= 22.19 for version 2.0.1)`);
  const fileOr = (data: string | undefined, path: string | undefined) => (data ? Buffer.from(data, 'base64') : path ? readFileSync(path) : undefined);
  return {
    server: cluster.server,
    ca: fileOr(cluster['certificate-authority-data'], cluster['certificate-authority']),
    skipTLSVerify: cluster['insecure-skip-tls-verify'],
    token: user.token,
    cert: fileOr(user['client-certificate-data'], user['client-certificate']),
    key: fileOr(user['client-key-data'], user['client-key']),
  };
}

/** A REST client for the six calls, over node:http(s), with JSON bodies and the API server's Status errors. */
function restApi(c: ClusterAccess & { cert?: Buffer; key?: Buffer }): KubeApi {
  const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const url = new URL(path, c.server.endsWith('/') ? c.server : `${c.server}/`);
    const mod = url.protocol === 'https:' ? await import('node:https') : await import('node:http');
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = mod.request(
        url,
        {
          method,
          headers: { accept: 'application/json', ...(payload ? { 'content-type': 'application/json' } : {}), ...(c.token ? { authorization: `Bearer ${c.token}` } : {}) },
          ca: c.ca,
          cert: c.cert,
          key: c.key,
          rejectUnauthorized: !c.skipTLSVerify,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => {
            let obj: { message?: string } | undefined;
            try {
              obj = text ? JSON.parse(text) : undefined;
            } catch {
              obj = undefined;
            }
            if ((res.statusCode ?? 500) >= 300) reject(new Error(`HTTP ${res.statusCode} ${method} ${url.pathname}: ${obj?.message ?? text.slice(0, 200)}`));
            else resolve(obj as T);
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  };
  const ns = (n: string) => encodeURIComponent(n);
  return {
    kind: 'rest',
    createSecret: (namespace, body) => call('POST', `api/v1/namespaces/${ns(namespace)}/secrets`, body),
    createJob: (namespace, body) => call('POST', `apis/batch/v1/namespaces/${ns(namespace)}/jobs`, body),
    listPods: (namespace, labelSelector) => call('GET', `api/v1/namespaces/${ns(namespace)}/pods?labelSelector=${encodeURIComponent(labelSelector)}`),
    readJobStatus: (namespace, name) => call('GET', `apis/batch/v1/namespaces/${ns(namespace)}/jobs/${ns(name)}/status`),
    deleteJob: (namespace, name) => call('DELETE', `apis/batch/v1/namespaces/${ns(namespace)}/jobs/${ns(name)}?propagationPolicy=Background`),
    deleteSecret: (namespace, name) => call('DELETE', `api/v1/namespaces/${ns(namespace)}/secrets/${ns(name)}`),
  };
}

/** An executor that runs each job as a Kubernetes Job: `r.run({ on: workers.kubernetes({ image, tokenFile, gpus: 1, data: { claimName } }) })`. */
export function kubernetes(opts: KubernetesOptions): KubernetesExecutor {
  return new KubernetesExecutor(opts);
}

// The `workers` namespace: run recipes on workers (`run({ on: await workers.connect(url, { token }) })`),
// start workers through Slurm or Kubernetes, or serve one from this process.
export {
  connect,
  WorkerExecutor,
  attachRemoteRun,
  isLockingExecutor,
  type LockingExecutor,
  type RemoteStartOptions,
} from './worker.js';
export { slurm, SlurmExecutor, type SlurmOptions, type SlurmState } from './slurm.js';
export {
  kubernetes,
  KubernetesExecutor,
  jobManifests,
  jobName,
  loadKubeConfig,
  type KubernetesOptions,
  type DataVolume,
  type ClusterAccess,
} from './kubernetes.js';
export { WorkerServer, type WorkerOptions } from '../worker/server.js';
export {
  WorkerClient,
  WorkerError,
  ConnectionLost,
  type ConnectOptions,
  type WatchHandlers,
  type UploadResult,
} from '../worker/client.js';
export { PROTOCOL_VERSION, type JobInfo, type WorkerHello } from '../worker/protocol.js';
export { readTokenFile } from '../worker/auth.js';
export { WORKER_PREFIX } from '../worker/paths.js';

import { WorkerServer, type WorkerOptions } from '../worker/server.js';

/** Starts a worker in this process (what `lathe worker` runs). */
export function serve(opts: WorkerOptions): Promise<WorkerServer> {
  return WorkerServer.start(opts);
}

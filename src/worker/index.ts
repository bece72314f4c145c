// The `workers` namespace: run recipes on workers (`run({ on: await workers.connect(url, { token }) })`),
// start workers through Slurm or Kubernetes, or serve one from this process.
export {
  connect,
  WorkerExecutor,
  attachRemoteRun,
  isLockingExecutor,
  type LockingExecutor,
  type RemoteStartOptions,
} from '../dispatch/worker.js';
export { slurm, SlurmExecutor, type SlurmOptions, type SlurmState } from '../dispatch/slurm.js';
export {
  kubernetes,
  KubernetesExecutor,
  jobManifests,
  jobName,
  loadKubeConfig,
  type KubernetesOptions,
  type DataVolume,
  type ClusterAccess,
} from '../dispatch/kubernetes.js';
export { WorkerServer, type WorkerOptions } from './server.js';
export {
  WorkerClient,
  WorkerError,
  ConnectionLost,
  type ConnectOptions,
  type WatchHandlers,
  type UploadResult,
} from './client.js';
export { PROTOCOL_VERSION, type JobInfo, type WorkerHello } from './protocol.js';
export { readTokenFile } from './auth.js';
export { WORKER_PREFIX } from './paths.js';

import { WorkerServer, type WorkerOptions } from './server.js';

/** Starts a worker in this process (what `lathe worker` runs). */
export function serve(opts: WorkerOptions): Promise<WorkerServer> {
  return WorkerServer.start(opts);
}

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiErrorMessage, jobManifests, jobName, kubernetes, loadKubeConfig } from '../src/dispatch/kubernetes.js';
import { Recipe } from '../src/runs/recipe.js';
import type { Metric } from '../src/runs/rundir.js';
import { WorkerServer } from '../src/worker/server.js';
import { freePort } from './collab-jupyter.js';
import { ROOT, scratch, tallySlice, tinyRecipe } from './helpers.js';

const TOKEN = 'kubernetes-test-token-0123456789abcdef';

interface Recorded {
  method: string;
  path: string;
  query: string;
  auth?: string;
  body?: Record<string, unknown>;
}

/**
 * A small stand-in for the Kubernetes API server: it records each request and answers the few calls
 * the executor makes the way the real one does (objects echoed back with uid, resourceVersion and
 * timestamps; a Job's pod listed Running and Ready once the Job exists, at the pod IP given).
 */
function fakeApiServer(
  podIP: string,
  tls: { key: Buffer; cert: Buffer },
  onCreate?: (kind: string, obj: Record<string, unknown>) => void,
): { server: Server; requests: Recorded[]; objects: Map<string, Record<string, unknown>> } {
  const requests: Recorded[] = [];
  const objects = new Map<string, Record<string, unknown>>();
  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url!, 'http://x');
    let text = '';
    for await (const c of req) text += c;
    const body = text ? JSON.parse(text) : undefined;
    requests.push({
      method: req.method!,
      path: url.pathname,
      query: url.search,
      auth: req.headers.authorization,
      body,
    });
    const send = (code: number, obj: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    const status = (code: number, reason: string, message: string) =>
      send(code, {
        apiVersion: 'v1',
        kind: 'Status',
        status: code < 300 ? 'Success' : 'Failure',
        reason,
        message,
        code,
      });
    let m: RegExpExecArray | null;
    if (req.method === 'POST' && url.pathname === '/apis/batch/v1/namespaces/forbidden/jobs') {
      return status(
        403,
        'Forbidden',
        'jobs.batch is forbidden: User "system:serviceaccount:ml:lathe" cannot create resource "jobs" in API group "batch" in the namespace "forbidden"',
      );
    }
    if (
      req.method === 'POST' &&
      (m = /^\/(?:api\/v1|apis\/batch\/v1)\/namespaces\/([^/]+)\/(secrets|jobs|services)$/.exec(url.pathname))
    ) {
      const key = `${m[2]}/${m[1]}/${body.metadata.name}`;
      if (objects.has(key)) return status(409, 'AlreadyExists', `${m[2]} "${body.metadata.name}" already exists`);
      const obj = {
        ...body,
        metadata: {
          ...body.metadata,
          uid: `uid-${objects.size}`,
          resourceVersion: String(100 + objects.size),
          creationTimestamp: new Date().toISOString(),
        },
      };
      objects.set(key, obj);
      onCreate?.(m[2]!, obj);
      return send(201, obj);
    }
    if (req.method === 'GET' && (m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname))) {
      const jobName = /^job-name=(.+)$/.exec(url.searchParams.get('labelSelector') ?? '')?.[1];
      const job = jobName ? (objects.get(`jobs/${m[1]}/${jobName}`) as { spec: Record<string, unknown> }) : undefined;
      // An Indexed Job's pods carry their index; the executor must pick pod 0 (listed last here).
      const indexed = job?.spec.completionMode === 'Indexed';
      const count = indexed ? Number(job.spec.completions) : job ? 1 : 0;
      const items = Array.from({ length: count }, (_, i) => count - 1 - i).map((i) => ({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name: `${jobName}-${i}-abcde`,
          namespace: m![1],
          labels: {
            'job-name': jobName,
            ...(indexed ? { 'batch.kubernetes.io/job-completion-index': String(i) } : {}),
          },
        },
        status: {
          phase: 'Running',
          podIP,
          conditions: [{ type: 'Ready', status: i === 0 ? 'True' : 'False' }],
        },
      }));
      return send(200, { apiVersion: 'v1', kind: 'PodList', metadata: { resourceVersion: '1' }, items });
    }
    if (req.method === 'GET' && (m = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs\/([^/]+)$/.exec(url.pathname))) {
      const obj = objects.get(`jobs/${m[1]}/${m[2]}`);
      return obj
        ? send(200, { ...obj, status: { active: 1 } })
        : status(404, 'NotFound', `jobs.batch "${m[2]}" not found`);
    }
    if (
      req.method === 'DELETE' &&
      (m = /^\/(?:api\/v1|apis\/batch\/v1)\/namespaces\/([^/]+)\/(secrets|jobs|services)\/([^/]+)$/.exec(url.pathname))
    ) {
      const key = `${m[2]}/${m[1]}/${m[3]}`;
      if (!objects.delete(key)) return status(404, 'NotFound', `${m[2]} "${m[3]}" not found`);
      return status(200, 'Deleted', `${m[3]} deleted`);
    }
    status(404, 'NotFound', `the fake API server does not serve ${req.method} ${url.pathname}`);
  };
  // HTTPS, as an API server serves: the library refuses to send a token over plain http.
  const server = createHttpsServer(tls, (q, r) => void handler(q, r));
  return { server, requests, objects };
}

/** A self-signed certificate for 127.0.0.1 (the fake API server's, and the CA the kubeconfig trusts). */
async function selfSigned(dir: string): Promise<{ key: Buffer; cert: Buffer }> {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  const r = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`);
  return { key: await readFile(key), cert: await readFile(cert) };
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return (server.address() as AddressInfo).port;
}

/** A kubeconfig file as kubectl writes it: one cluster (with its CA), one token user, a context with a namespace. */
function kubeconfigYaml(server: string, token: string, ca: Buffer, namespace?: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'current-context: fake',
    'contexts:',
    '- name: fake',
    `  context: {cluster: fake, user: tester${namespace ? `, namespace: ${namespace}` : ''}}`,
    'clusters:',
    '- name: fake',
    `  cluster: {server: "${server}", certificate-authority-data: ${ca.toString('base64')}}`,
    'users:',
    '- name: tester',
    `  user: {token: ${token}}`,
    '',
  ].join('\n');
}

describe('kubernetes executor', () => {
  it('generates a Secret for the token and a batch/v1 Job asking for GPUs, with the data volume read-only', () => {
    const name = jobName('Tally Run!');
    expect(name).toMatch(/^lathe-tally-run-[0-9a-f]{8}$/);
    const { secret, job } = jobManifests(name, {
      image: 'registry.example/lathe:0.1',
      token: TOKEN,
      backend: 'webgpu',
      namespace: 'ml',
      gpus: 2,
      cpu: '8',
      memory: '32Gi',
      data: { claimName: 'corpus' },
      nodeSelector: { 'nvidia.com/gpu.present': 'true' },
    });
    expect(secret).toEqual({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: `${name}-token`, namespace: 'ml', labels: expect.objectContaining({ 'lathe.dev/run': name }) },
      type: 'Opaque',
      data: { token: Buffer.from(TOKEN).toString('base64') },
    });
    expect(job.apiVersion).toBe('batch/v1');
    expect(job.kind).toBe('Job');
    expect(job.spec!.backoffLimit).toBe(0);
    const pod = job.spec!.template.spec!;
    expect(pod.restartPolicy).toBe('Never');
    expect(pod.nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true' });
    const c = pod.containers[0]!;
    expect(c.image).toBe('registry.example/lathe:0.1');
    expect(c.command).toEqual([
      'lathe',
      'worker',
      '--listen',
      '0.0.0.0:8765',
      '--token-file',
      '/var/run/lathe/token',
      '--state-dir',
      '/state',
      '--backend',
      'webgpu',
      '--once',
      '--data-root',
      '/data',
    ]);
    // Vulkan in an NVIDIA container needs the graphics capability (the webgpu backend).
    expect(c.env).toEqual([{ name: 'NVIDIA_DRIVER_CAPABILITIES', value: 'compute,utility,graphics' }]);
    const cpuPod = jobManifests(name, { image: 'i', token: TOKEN, backend: 'cpu', namespace: 'ml', gpus: 0 }).job.spec!
      .template.spec!;
    expect(cpuPod.containers[0]!.env).toBeUndefined();
    expect(c.resources).toEqual({
      limits: { 'nvidia.com/gpu': '2', cpu: '8', memory: '32Gi' },
      requests: { cpu: '8', memory: '32Gi' },
    });
    expect(c.volumeMounts).toEqual([
      { name: 'token', mountPath: '/var/run/lathe', readOnly: true },
      { name: 'state', mountPath: '/state' },
      { name: 'data', mountPath: '/data', readOnly: true },
    ]);
    expect(pod.volumes).toEqual([
      { name: 'token', secret: { secretName: `${name}-token`, defaultMode: 0o400 } },
      { name: 'state', emptyDir: {} },
      { name: 'data', persistentVolumeClaim: { claimName: 'corpus', readOnly: true } },
    ]);
    // The token is only in the Secret, never in the Job.
    expect(JSON.stringify(job)).not.toContain(TOKEN);
    // NFS data, a state claim (retries then resume), no GPUs.
    const other = jobManifests('x', {
      image: 'i',
      token: TOKEN,
      backend: 'cpu',
      gpus: 0,
      data: { nfs: { server: 'nas', path: '/corpus' } },
      state: { claimName: 'lathe-state' },
    }).job.spec!;
    expect(other.backoffLimit).toBe(3);
    expect(other.template.spec!.volumes!.slice(1)).toEqual([
      { name: 'state', persistentVolumeClaim: { claimName: 'lathe-state' } },
      { name: 'data', nfs: { server: 'nas', path: '/corpus', readOnly: true } },
    ]);
    expect(other.template.spec!.containers[0]!.resources).toEqual({ limits: {}, requests: undefined });
  });

  describe('against a fake API server, through @kubernetes/client-node, with a real worker as the pod', () => {
    let api: ReturnType<typeof fakeApiServer>;
    let worker: WorkerServer;
    let server: string;
    let dir: string;
    let kubeconfig: string;

    beforeAll(async () => {
      dir = await scratch('lathe-k8s-');
      const tls = await selfSigned(dir);
      api = fakeApiServer('127.0.0.1', tls);
      server = `https://127.0.0.1:${await listen(api.server)}`;
      worker = await WorkerServer.start({ token: TOKEN, stateDir: join(dir, 'state'), backend: 'cpu', log: () => {} });
      kubeconfig = join(dir, 'kubeconfig');
      await writeFile(kubeconfig, kubeconfigYaml(server, 'k8s-bearer', tls.cert, 'ml'));
    });
    afterAll(async () => {
      await worker?.close();
      await new Promise((r) => api?.server.close(r));
    });

    it('creates the Secret and the Job from a kubeconfig file, connects to the pod, trains, and cleans up', async () => {
      const data = await tallySlice(dir, 150);
      // No namespace option: the kubeconfig context's (ml) is used, as kubectl would.
      const ex = kubernetes({
        kubeconfig,
        image: 'lathe:test',
        token: TOKEN,
        gpus: 1,
        backend: 'cpu',
        port: worker.port,
        data: { claimName: 'corpus' },
        pollMs: 50,
      });
      expect(await ex.namespace()).toBe('ml');
      const r = new Recipe(
        tinyRecipe(data, { name: 'tiny', train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 } }),
        { baseDir: dir },
      );
      const run = await r.run({ on: ex, out: join(dir, 'run') });
      expect(run.summary).toMatchObject({ status: 'completed', step: 3 });
      const rec = JSON.parse(await readFile(join(dir, 'run', 'kubernetes.json'), 'utf8'));
      expect(rec).toMatchObject({
        namespace: 'ml',
        job: expect.stringMatching(/^lathe-tiny-[0-9a-f]{8}$/),
        worker: `ws://127.0.0.1:${worker.port}`,
        status: 'completed',
      });

      const calls = api.requests.map((q) => `${q.method} ${q.path}${q.query}`);
      expect(calls).toEqual([
        'POST /api/v1/namespaces/ml/secrets',
        'POST /apis/batch/v1/namespaces/ml/jobs',
        `GET /api/v1/namespaces/ml/pods?labelSelector=job-name%3D${rec.job}`,
        `DELETE /api/v1/namespaces/ml/secrets/${rec.job}-token`,
      ]);
      // The library sent the kubeconfig user's bearer token on every call.
      expect(api.requests.map((q) => q.auth)).toEqual(Array(4).fill('Bearer k8s-bearer'));
      // The bodies are the generated manifests, as the library serialised them.
      const secret = api.requests[0]!.body as {
        kind: string;
        metadata: { name: string; namespace: string };
        data: { token: string };
      };
      expect(secret).toMatchObject({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: `${rec.job}-token`, namespace: 'ml' },
        type: 'Opaque',
      });
      expect(Buffer.from(secret.data.token, 'base64').toString()).toBe(TOKEN);
      const job = api.requests[1]!.body as {
        apiVersion: string;
        kind: string;
        metadata: { name: string };
        spec: {
          backoffLimit: number;
          template: { spec: { volumes: unknown[]; containers: { resources: unknown; command: string[] }[] } };
        };
      };
      expect(job).toMatchObject({
        apiVersion: 'batch/v1',
        kind: 'Job',
        metadata: { name: rec.job, namespace: 'ml' },
        spec: { backoffLimit: 0 },
      });
      const c = job.spec.template.spec.containers[0]!;
      expect(c.resources).toEqual({ limits: { 'nvidia.com/gpu': '1' } });
      expect(c.command).toEqual([
        'lathe',
        'worker',
        '--listen',
        `0.0.0.0:${worker.port}`,
        '--token-file',
        '/var/run/lathe/token',
        '--state-dir',
        '/state',
        '--backend',
        'cpu',
        '--once',
        '--data-root',
        '/data',
      ]);
      expect(job.spec.template.spec.volumes).toContainEqual({
        name: 'data',
        persistentVolumeClaim: { claimName: 'corpus', readOnly: true },
      });
      expect(JSON.stringify(job)).not.toContain(TOKEN);
      // readNamespacedJob: GET the Job itself.
      expect(await ex.state(rec.job)).toEqual({ active: 1, succeeded: 0, failed: 0 });
      expect(api.requests.at(-1)).toMatchObject({
        method: 'GET',
        path: `/apis/batch/v1/namespaces/ml/jobs/${rec.job}`,
        auth: 'Bearer k8s-bearer',
      });
      await expect(ex.state('lathe-gone-00000000')).rejects.toThrow(
        /reading Job lathe-gone-00000000 in ml failed: HTTP 404: jobs.batch "lathe-gone-00000000" not found/,
      );
    });

    it('cancel deletes the Job with background propagation, and its Secret (a given KubeConfig, an explicit namespace)', async () => {
      const data = await tallySlice(dir, 150);
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfig);
      const ex = kubernetes({
        kubeconfig: kc,
        namespace: 'team',
        image: 'lathe:test',
        token: TOKEN,
        gpus: 0,
        backend: 'cpu',
        port: worker.port,
        pollMs: 50,
      });
      const from = api.requests.length;
      const long = new Recipe(
        tinyRecipe(data, { name: 'long', train: { steps: 400, batchSize: 4, warmupSteps: 1, checkpointEvery: 0 } }),
        { baseDir: dir },
      );
      const running = await long.start({ on: ex, out: join(dir, 'long') });
      await new Promise<void>((resolve) => {
        const off = running.onMetric((m) => m.step >= 2 && (off(), resolve()));
      });
      running.cancel();
      expect((await running.done).status).toBe('cancelled');
      const name = JSON.parse(await readFile(join(dir, 'long', 'kubernetes.json'), 'utf8')).job;
      const mine = api.requests.slice(from);
      const del = mine.find((q) => q.method === 'DELETE' && q.path === `/apis/batch/v1/namespaces/team/jobs/${name}`);
      expect(del?.query).toBe('?propagationPolicy=Background');
      expect(del?.auth).toBe('Bearer k8s-bearer');
      expect(mine.filter((q) => q.method === 'DELETE').map((q) => q.path)).toContain(
        `/api/v1/namespaces/team/secrets/${name}-token`,
      );
      expect(api.objects.has(`jobs/team/${name}`)).toBe(false);
      expect(api.objects.has(`secrets/team/${name}-token`)).toBe(false);
      // Cancelling again: the Job is already gone (404), which is no error.
      await expect(ex.cancel(name)).resolves.toBeUndefined();
    });

    it("reports the API server's refusal in a sentence and removes the Secret it had created", async () => {
      const ex = kubernetes({
        kubeconfig,
        namespace: 'forbidden',
        image: 'lathe:test',
        token: TOKEN,
        backend: 'cpu',
        pollMs: 50,
      });
      const data = await tallySlice(dir, 150);
      const r = new Recipe(
        tinyRecipe(data, { name: 'denied', train: { steps: 2, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 } }),
        { baseDir: dir },
      );
      const from = api.requests.length;
      await expect(r.start({ on: ex, out: join(dir, 'denied') })).rejects.toThrow(
        /^kubernetes: creating Job lathe-denied-[0-9a-f]{8} in forbidden failed: HTTP 403: jobs.batch is forbidden: User "system:serviceaccount:ml:lathe" cannot create/,
      );
      expect(api.requests.slice(from).map((q) => `${q.method} ${q.path}`)).toEqual([
        'POST /api/v1/namespaces/forbidden/secrets',
        'POST /apis/batch/v1/namespaces/forbidden/jobs',
        expect.stringMatching(/^DELETE \/api\/v1\/namespaces\/forbidden\/secrets\/lathe-denied-[0-9a-f]{8}-token$/),
      ]);
      expect([...api.objects.keys()].filter((k) => k.includes('forbidden'))).toEqual([]);
      expect(apiErrorMessage(new Error('plain'))).toBe('plain');
    });
  });

  it("in a pod: the service account's token, CA and namespace, over TLS (KubeConfig.loadFromCluster)", async () => {
    const dir = await scratch('lathe-k8s-pod-');
    const tls = await selfSigned(dir);
    const api = fakeApiServer('127.0.0.1', tls);
    const port = await listen(api.server);
    // The files a pod's service account mounts, under a prefix (the library reads <prefix>/var/run/secrets/...).
    const sa = join(dir, 'var', 'run', 'secrets', 'kubernetes.io', 'serviceaccount');
    await mkdir(sa, { recursive: true });
    await writeFile(join(sa, 'token'), 'sa-token-123');
    await writeFile(join(sa, 'ca.crt'), tls.cert);
    await writeFile(join(sa, 'namespace'), 'pods-ns');
    const env = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = '127.0.0.1';
    process.env.KUBERNETES_SERVICE_PORT = String(port);
    try {
      const kc = new KubeConfig();
      kc.loadFromCluster(dir);
      const ex = kubernetes({ kubeconfig: kc, image: 'lathe:test', token: TOKEN, backend: 'cpu' });
      expect(await ex.namespace()).toBe('pods-ns');
      await expect(ex.state('lathe-x-00000000')).rejects.toThrow(/HTTP 404/);
      expect(api.requests).toEqual([
        {
          method: 'GET',
          path: '/apis/batch/v1/namespaces/pods-ns/jobs/lathe-x-00000000',
          query: '',
          auth: 'Bearer sa-token-123',
          body: undefined,
        },
      ]);
      // Not a pod (no service host): inCluster says so instead of guessing.
      delete process.env.KUBERNETES_SERVICE_HOST;
      await expect(loadKubeConfig({ inCluster: true })).rejects.toThrow(/inCluster, but this is not a pod/);
    } finally {
      for (const [k, v] of [
        ['KUBERNETES_SERVICE_HOST', env.host],
        ['KUBERNETES_SERVICE_PORT', env.port],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await new Promise((r) => api.server.close(r));
    }
  });

  it('says which cluster configuration is missing or wrong', async () => {
    const dir = await scratch('lathe-k8s-cfg-');
    await expect(loadKubeConfig({ kubeconfig: join(dir, 'nope') })).rejects.toThrow(
      `kubeconfig ${join(dir, 'nope')}: no such file`,
    );
    const saved = { KUBECONFIG: process.env.KUBECONFIG, HOME: process.env.HOME };
    process.env.HOME = dir;
    delete process.env.KUBECONFIG;
    try {
      await expect(loadKubeConfig({})).rejects.toThrow(
        /no cluster to talk to: no \$KUBECONFIG, no .*\.kube\/config, and not inside a pod/,
      );
      // With $KUBECONFIG, kubectl's lookup finds it.
      const file = join(dir, 'config');
      await writeFile(file, kubeconfigYaml('https://k8s.example:6443', 't', Buffer.from('not a real CA')));
      process.env.KUBECONFIG = file;
      expect((await loadKubeConfig({})).getCurrentCluster()?.server).toBe('https://k8s.example:6443');
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

describe('a torch run over 2 nodes (Indexed Job, headless Service)', () => {
  const torchLock = { kind: 'torch' as const, device: 'cuda' as const, dtype: 'bf16' as const, torch: '2.13.0' };
  const resources = { gpus: 4, nodes: 2, parallel: 'fsdp' as const, timeoutSeconds: 300, restarts: 1 };

  it('one pod per node: pod 0 the worker, the others `lathe engine-node` joining its rendezvous', () => {
    const name = 'lathe-big-0123abcd';
    const { secret, job, service } = jobManifests(name, {
      image: 'i',
      token: TOKEN,
      backend: 'cpu',
      namespace: 'ml',
      gpus: 1,
      engine: torchLock,
      resources,
      engineSecret: 'e'.repeat(48),
    });
    expect(Buffer.from(secret.data!['engine-secret']!, 'base64').toString()).toBe('e'.repeat(48));
    expect(service).toMatchObject({
      kind: 'Service',
      metadata: { name, namespace: 'ml' },
      spec: { clusterIP: 'None', publishNotReadyAddresses: true, selector: { 'lathe.dev/run': name } },
    });
    const spec = job.spec!;
    expect(spec).toMatchObject({
      completionMode: 'Indexed',
      completions: 2,
      parallelism: 2,
      successPolicy: { rules: [{ succeededIndexes: '0' }] },
      backoffLimit: 1,
    });
    const pod = spec.template.spec!;
    expect(pod.subdomain).toBe(name);
    const c = pod.containers[0]!;
    // The GPUs of a node: the run's 4 per node, not the executor's default 1.
    expect(c.resources!.limits).toEqual({ 'nvidia.com/gpu': '4' });
    expect(c.command!.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(c.command![2]).toBe(
      'if [ "$JOB_COMPLETION_INDEX" = 0 ]; then exec lathe worker --listen 0.0.0.0:8765 --token-file /var/run/lathe/token ' +
        '--state-dir /state --backend cpu --once --engine torch --device cuda --dtype bf16; ' +
        'else exec lathe engine-node --gpus 4 --nodes 2 --parallel fsdp --device cuda --timeout-seconds 300; fi',
    );
    const env = Object.fromEntries(c.env!.map((e) => [e.name, e.value ?? e.valueFrom]));
    expect(env).toEqual({
      LATHE_RDZV_ENDPOINT: `${name}-0.${name}:29400`,
      LATHE_RDZV_ID: name,
      LATHE_HOST: `${name}-0.${name}`,
      LATHE_ENGINE_PORT: '29500',
      LATHE_ENGINE_ADDR: `${name}-0.${name}:29500`,
      LATHE_ENGINE_SECRET: { secretKeyRef: { name: `${name}-token`, key: 'engine-secret' } },
    });
    // No secret in the Job itself.
    expect(JSON.stringify(job)).not.toContain('e'.repeat(48));
    // One node: a plain Job, no Service, the worker told its engine.
    const one = jobManifests(name, {
      image: 'i',
      token: TOKEN,
      backend: 'cpu',
      engine: torchLock,
      resources: { ...resources, nodes: 1 },
    });
    expect(one.service).toBeUndefined();
    expect(one.job.spec!.completionMode).toBeUndefined();
    expect(one.job.spec!.template.spec!.containers[0]!.command!.slice(-6)).toEqual([
      '--engine',
      'torch',
      '--device',
      'cuda',
      '--dtype',
      'bf16',
    ]);
  });

  /**
   * Runs an Indexed Job's pods on this machine as a kubelet would: every index runs the container's
   * command with its env (Secret references resolved from the API server's objects) and
   * JOB_COMPLETION_INDEX; the pod's DNS name points here and its volumes at folders.
   */
  function runPods(
    job: Record<string, any>,
    objects: Map<string, Record<string, any>>,
    volumes: Record<string, string>,
  ) {
    const { name, namespace } = job.metadata;
    const c = job.spec.template.spec.containers[0];
    const fromSecret = (ref: { name: string; key: string }) =>
      Buffer.from(objects.get(`secrets/${namespace}/${ref.name}`)!.data[ref.key], 'base64').toString();
    const env: Record<string, string> = {};
    for (const e of c.env)
      env[e.name] =
        e.value !== undefined
          ? e.value.replaceAll(`${name}-0.${name}`, '127.0.0.1')
          : fromSecret(e.valueFrom.secretKeyRef);
    let script: string = c.command[2];
    for (const [mount, folder] of Object.entries(volumes)) script = script.replaceAll(` ${mount}`, ` ${folder}`);
    return Array.from({ length: job.spec.completions as number }, (_, i) => {
      const child = spawn(c.command[0], [c.command[1], script], {
        env: { ...process.env, ...env, JOB_COMPLETION_INDEX: String(i) },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      let log = '';
      child.stdout!.on('data', (d: Buffer) => (log += d));
      child.stderr!.on('data', (d: Buffer) => (log += d));
      return { child, log: () => log };
    });
  }

  it('runs for real through the executor: the same losses as 2 ranks on one machine, and the Service goes after', async () => {
    const dir = await scratch('lathe-k8s-nodes-');
    const tls = await selfSigned(dir);
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
    await mkdir(join(dir, 'state'));
    const pods: { child: ChildProcess; log: () => string }[] = [];
    const api = fakeApiServer('127.0.0.1', tls, (kind, obj) => {
      if (kind === 'jobs')
        pods.push(...runPods(obj, api.objects, { '/var/run/lathe/token': tokenFile, '/state': join(dir, 'state') }));
    });
    const server = `https://127.0.0.1:${await listen(api.server)}`;
    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(kubeconfig, kubeconfigYaml(server, 'k8s-bearer', tls.cert, 'ml'));
    const data = await tallySlice(dir, 200);
    const recipe = (res: Record<string, unknown>) =>
      new Recipe(
        tinyRecipe(data, {
          engine: 'torch',
          model: { dim: 32, layers: 2, heads: 4, context: 32 },
          train: { steps: 6, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 },
          eval: { every: 0, batches: 1 },
          resources: res,
        }),
        { baseDir: dir },
      );
    try {
      const local = await recipe({ gpus: 2 }).start({ out: join(dir, 'local') });
      expect((await local.done).status).toBe('completed');
      const ex = kubernetes({
        kubeconfig,
        image: 'registry.example/lathe:0.1',
        token: TOKEN,
        gpus: 0,
        port: await freePort(),
        rdzvPort: await freePort(),
        enginePort: await freePort(),
        command: [process.execPath, join(ROOT, 'bin', 'lathe.js')],
        pollMs: 200,
      });
      const notices: string[] = [];
      const run = await recipe({ gpus: 1, nodes: 2, timeoutSeconds: 120 }).start({
        on: ex,
        out: join(dir, 'k8s'),
        onNotice: (m) => notices.push(m),
      });
      expect(run.lock.engine).toMatchObject({ kind: 'torch', device: 'cpu' });
      const summary = await run.done;
      expect(summary.status, pods.map((p) => p.log()).join('\n---\n')).toBe('completed');
      const events = (await readFile(join(dir, 'k8s', 'events.jsonl'), 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      const world = events.find((e) => e.type === 'notice' && /^torch\.distributed:/.test(e.message));
      expect(world.message).toMatch(
        /^torch\.distributed: 2 ranks \(ddp, 2 nodes × 1\): rank 0 pid \d+ on \S+, rank 1 pid \d+ on \S+$/,
      );
      const losses = async (d: string) =>
        (await readFile(join(dir, d, 'metrics.jsonl'), 'utf8'))
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Metric)
          .filter((m) => typeof m.loss === 'number')
          .map((m) => m.loss as number);
      const [a, b] = [await losses('local'), await losses('k8s')];
      expect(b).toHaveLength(6);
      for (let i = 0; i < 6; i++) expect(Math.abs(a[i]! - b[i]!) / a[i]!).toBeLessThan(1e-6);
      // Created: Secret, Service, Job; after the run, the Secret and the Service are gone.
      const made = api.requests.filter((r) => r.method === 'POST').map((r) => r.path.split('/').pop());
      expect(made).toEqual(['secrets', 'services', 'jobs']);
      expect([...api.objects.keys()].filter((k) => !k.startsWith('jobs/'))).toEqual([]);
    } finally {
      for (const p of pods) {
        try {
          process.kill(-p.child.pid!, 'SIGTERM');
        } catch {
          // already gone
        }
      }
      await Promise.all(pods.map((p) => (p.child.exitCode === null ? new Promise((r) => p.child.once('exit', r)) : 0)));
      await new Promise((r) => api.server.close(r));
    }
  }, 240_000);
});

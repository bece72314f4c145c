import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobManifests, jobName, kubernetes } from '../src/dispatch/kubernetes.js';
import { Recipe } from '../src/recipe/recipe.js';
import { WorkerServer } from '../src/worker/server.js';
import { scratch, tallySlice, tinyRecipe } from './helpers.js';

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
function fakeApiServer(podIP: string): { server: Server; requests: Recorded[]; objects: Map<string, Record<string, unknown>> } {
  const requests: Recorded[] = [];
  const objects = new Map<string, Record<string, unknown>>();
  const server = createServer(async (req: IncomingMessage, res) => {
    const url = new URL(req.url!, 'http://x');
    let text = '';
    for await (const c of req) text += c;
    const body = text ? JSON.parse(text) : undefined;
    requests.push({ method: req.method!, path: url.pathname, query: url.search, auth: req.headers.authorization, body });
    const send = (code: number, obj: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    const status = (code: number, reason: string, message: string) => send(code, { apiVersion: 'v1', kind: 'Status', status: code < 300 ? 'Success' : 'Failure', reason, message, code });
    let m: RegExpExecArray | null;
    if (req.method === 'POST' && (m = /^\/(?:api\/v1|apis\/batch\/v1)\/namespaces\/([^/]+)\/(secrets|jobs)$/.exec(url.pathname))) {
      const key = `${m[2]}/${m[1]}/${body.metadata.name}`;
      if (objects.has(key)) return status(409, 'AlreadyExists', `${m[2]} "${body.metadata.name}" already exists`);
      const obj = { ...body, metadata: { ...body.metadata, uid: `uid-${objects.size}`, resourceVersion: String(100 + objects.size), creationTimestamp: new Date().toISOString() } };
      objects.set(key, obj);
      return send(201, obj);
    }
    if (req.method === 'GET' && (m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname))) {
      const jobName = /^job-name=(.+)$/.exec(url.searchParams.get('labelSelector') ?? '')?.[1];
      const job = jobName && objects.get(`jobs/${m[1]}/${jobName}`);
      const items = job
        ? [
            {
              apiVersion: 'v1',
              kind: 'Pod',
              metadata: { name: `${jobName}-abcde`, namespace: m[1], labels: { 'job-name': jobName } },
              status: { phase: 'Running', podIP, conditions: [{ type: 'Ready', status: 'True' }] },
            },
          ]
        : [];
      return send(200, { apiVersion: 'v1', kind: 'PodList', metadata: { resourceVersion: '1' }, items });
    }
    if (req.method === 'GET' && (m = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs\/([^/]+)\/status$/.exec(url.pathname))) {
      const obj = objects.get(`jobs/${m[1]}/${m[2]}`);
      return obj ? send(200, { ...obj, status: { active: 1 } }) : status(404, 'NotFound', `jobs.batch "${m[2]}" not found`);
    }
    if (req.method === 'DELETE' && (m = /^\/(?:api\/v1|apis\/batch\/v1)\/namespaces\/([^/]+)\/(secrets|jobs)\/([^/]+)$/.exec(url.pathname))) {
      const key = `${m[2]}/${m[1]}/${m[3]}`;
      if (!objects.delete(key)) return status(404, 'NotFound', `${m[2]} "${m[3]}" not found`);
      return status(200, 'Deleted', `${m[3]} deleted`);
    }
    status(404, 'NotFound', `the fake API server does not serve ${req.method} ${url.pathname}`);
  });
  return { server, requests, objects };
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
    expect(c.command).toEqual(['lathe', 'worker', '--listen', '0.0.0.0:8765', '--token-file', '/var/run/lathe/token', '--state-dir', '/state', '--backend', 'webgpu', '--once', '--data-root', '/data']);
    expect(c.resources).toEqual({ limits: { 'nvidia.com/gpu': '2', cpu: '8', memory: '32Gi' }, requests: { cpu: '8', memory: '32Gi' } });
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
    const other = jobManifests('x', { image: 'i', token: TOKEN, backend: 'cpu', gpus: 0, data: { nfs: { server: 'nas', path: '/corpus' } }, state: { claimName: 'lathe-state' } }).job.spec!;
    expect(other.backoffLimit).toBe(3);
    expect(other.template.spec!.volumes!.slice(1)).toEqual([
      { name: 'state', persistentVolumeClaim: { claimName: 'lathe-state' } },
      { name: 'data', nfs: { server: 'nas', path: '/corpus', readOnly: true } },
    ]);
    expect(other.template.spec!.containers[0]!.resources).toEqual({ limits: {}, requests: undefined });
  });

  describe('against a fake API server, with a real worker as the pod', () => {
    let api: ReturnType<typeof fakeApiServer>;
    let worker: WorkerServer;
    let server: string;
    let dir: string;

    beforeAll(async () => {
      dir = await scratch('lathe-k8s-');
      api = fakeApiServer('127.0.0.1');
      await new Promise<void>((r) => api.server.listen(0, '127.0.0.1', () => r()));
      worker = await WorkerServer.start({ token: TOKEN, stateDir: join(dir, 'state'), backend: 'cpu', log: () => {} });
      server = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await worker?.close();
      await new Promise((r) => api?.server.close(r));
    });

    it('creates the Secret and the Job, connects to the pod, trains, and cleans up; cancel deletes the Job', async () => {
      const data = await tallySlice(dir, 150);
      const ex = kubernetes({ cluster: { server, token: 'k8s-bearer' }, namespace: 'ml', image: 'lathe:test', token: TOKEN, gpus: 1, backend: 'cpu', port: worker.port, data: { claimName: 'corpus' }, pollMs: 50 });
      // @kubernetes/client-node 2.0.1 needs Node >= 22.19 (undici 8); on older Node the built-in REST client makes the same calls.
      const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
      const expected = major > 22 || (major === 22 && minor >= 19) ? 'client-node' : 'rest';
      expect(await ex.client()).toBe(expected);
      console.log(`kubernetes API client on Node ${process.version}: ${expected}`);
      const r = new Recipe(tinyRecipe(data, { name: 'tiny', train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 } }), { baseDir: dir });
      const run = await r.run({ on: ex, out: join(dir, 'run') });
      expect(run.summary).toMatchObject({ status: 'completed', step: 3 });
      const rec = JSON.parse(await readFile(join(dir, 'run', 'kubernetes.json'), 'utf8'));
      expect(rec).toMatchObject({ namespace: 'ml', job: expect.stringMatching(/^lathe-tiny-[0-9a-f]{8}$/), worker: `ws://127.0.0.1:${worker.port}`, status: 'completed' });

      const calls = api.requests.map((q) => `${q.method} ${q.path}${q.query}`);
      expect(calls[0]).toBe('POST /api/v1/namespaces/ml/secrets');
      expect(calls[1]).toBe('POST /apis/batch/v1/namespaces/ml/jobs');
      expect(calls[2]).toBe(`GET /api/v1/namespaces/ml/pods?labelSelector=job-name%3D${rec.job}`);
      expect(calls.at(-1)).toBe(`DELETE /api/v1/namespaces/ml/secrets/${rec.job}-token`);
      expect(api.requests.every((q) => q.auth === 'Bearer k8s-bearer')).toBe(true);
      const body = api.requests[1]!.body as { spec: { template: { spec: { containers: { resources: unknown; command: string[] }[] } } } };
      expect(body.spec.template.spec.containers[0]!.resources).toEqual({ limits: { 'nvidia.com/gpu': '1' } });
      expect(body.spec.template.spec.containers[0]!.command).toContain('--once');
      const secret = api.requests[0]!.body as { data: { token: string } };
      expect(Buffer.from(secret.data.token, 'base64').toString()).toBe(TOKEN);
      expect(await ex.state(rec.job)).toEqual({ active: 1, succeeded: 0, failed: 0 });

      // Cancel: the run stops at its next step and the Job (with its pod) is deleted. This time the
      // cluster comes from a kubeconfig file.
      const kubeconfig = join(dir, 'kubeconfig');
      await writeFile(
        kubeconfig,
        ['apiVersion: v1', 'kind: Config', 'current-context: fake', 'contexts:', '- name: fake', '  context: {cluster: fake, user: tester}', 'clusters:', '- name: fake', `  cluster: {server: "${server}"}`, 'users:', '- name: tester', '  user: {token: k8s-bearer}', ''].join('\n'),
      );
      const ex2 = kubernetes({ kubeconfig, namespace: 'ml', image: 'lathe:test', token: TOKEN, gpus: 1, backend: 'cpu', port: worker.port, pollMs: 50 });
      const long = r.with({ name: 'long', train: { steps: 400, checkpointEvery: 0 } });
      const running = await long.start({ on: ex2, out: join(dir, 'long') });
      await new Promise<void>((resolve) => {
        const off = running.onMetric((m) => m.step >= 2 && (off(), resolve()));
      });
      running.cancel();
      expect((await running.done).status).toBe('cancelled');
      const name = JSON.parse(await readFile(join(dir, 'long', 'kubernetes.json'), 'utf8')).job;
      const deletes = api.requests.filter((q) => q.method === 'DELETE').map((q) => q.path);
      expect(deletes).toContain(`/apis/batch/v1/namespaces/ml/jobs/${name}`);
      expect(api.requests.find((q) => q.method === 'DELETE' && q.path.endsWith(`/jobs/${name}`))!.query).toMatch(/propagationPolicy=Background/);
      expect(api.objects.has(`jobs/ml/${name}`)).toBe(false);
      expect(api.objects.has(`secrets/ml/${name}-token`)).toBe(false);
    });
  });
});

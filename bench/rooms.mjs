#!/usr/bin/env node
// Run rooms on loopback: one producer (the real publishRun) and N viewers (20 by default) in one room.
//   propagation: time from the producer's push until every viewer has the metric point, p50/p95 over
//                the timed points (sent every --interval ms; all clients in this process, one clock)
//   memory:      the room server's RSS once the room holds --points metric points (100k), viewers connected
// Ours is `lathe rooms serve` (token check, frame inspection, on-disk log); the reference is the stock
// @y/websocket-server server (no auth, in memory) under the same clients and load. ratio is higher is
// better: reference / ours for both latency and memory. Issue 6's goal: p95 <= 100 ms.
//
//   node bench/rooms.mjs [--clients 20] [--samples 400] [--points 100000] [--interval 10] [--quick]
// Prints a table, then the cases as JSON on the last line; `benchRooms()` returns them for bench/run.mjs.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = new URL('../dist/src/', import.meta.url);

/** Starts a server child and resolves with { proc, url } once it accepts connections. */
async function startServer(kind, dataDir) {
  const env = { ...process.env };
  let args;
  if (kind === 'lathe')
    args = [join(root, 'bin', 'lathe.js'), 'rooms', 'serve', '--port', '0', '--data-dir', dataDir, '--quiet'];
  else {
    // The stock server listens on PORT; find a free one first.
    const { createServer } = await import('node:net');
    const port = await new Promise((r) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = s.address().port;
        s.close(() => r(p));
      });
    });
    Object.assign(env, { PORT: String(port), HOST: '127.0.0.1' });
    delete env.YPERSISTENCE;
    args = [join(root, 'node_modules', '@y', 'websocket-server', 'src', 'server.js')];
  }
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const url = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${kind} server did not start: ${out}`)), 30_000);
    const on = (d) => {
      out += d;
      const m =
        kind === 'lathe' ? /serving (ws:\/\/[^/\s]+)/.exec(out) : /running at '([^']+)' on port (\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(kind === 'lathe' ? m[1] : `ws://${m[1]}:${m[2]}`);
      }
    };
    proc.stdout.on('data', on);
    proc.stderr.on('data', on);
    proc.once('exit', (c) => reject(new Error(`${kind} server exited ${c}: ${out}`)));
  });
  return { proc, url };
}

/** RSS and peak RSS (MB) of a process, from /proc. */
function rssMb(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

/** One server under the workload: latency samples, then fill to `points`, then its RSS. */
async function measure(kind, { clients, samples, points, interval }) {
  const rooms = await import(new URL('rooms/index.js', dist));
  const { Run } = await import(new URL('runs/run.js', dist));
  const { RunDir } = await import(new URL('runs/rundir.js', dist));
  const dir = mkdtempSync(join(tmpdir(), `lathe-bench-rooms-${kind}-`));
  const server = await startServer(kind, join(dir, 'rooms'));
  const idle = rssMb(server.proc.pid);
  const secret =
    kind === 'lathe' ? rooms.loadSecret({ dataDir: join(dir, 'rooms') }).secret : 'unused-by-the-stock-server';
  const write = rooms.mintToken(secret, { room: 'run:bench', role: 'write', ttl: '1h' });
  const read = rooms.mintToken(secret, { room: 'run:bench', role: 'read', ttl: '1h' });
  const lock = { id: 'bench', backend: 'cpu', recipe: { name: 'bench', stage: 'pretrain', train: { steps: points } } };
  const run = new Run(new RunDir(join(dir, 'bench')), lock, new Promise(() => {}));
  const pub = rooms.publishRun(run, {
    url: server.url,
    token: write,
    room: 'run:bench',
    user: 'bench',
    closeWhenDone: false,
    log: () => {},
  });

  const sentAt = new Map();
  const lat = [];
  const allAt = new Map();
  let measuring = false;
  const received = new Array(clients).fill(0);
  const viewers = [];
  for (let i = 0; i < clients; i++) {
    const v = rooms.connectRoom(`${server.url}/run:bench`, { token: read, presence: { name: `viewer-${i}` } });
    v.shared.metrics.observe((ev) => {
      const now = performance.now();
      for (const d of ev.changes.delta) {
        if (!d.insert) continue;
        received[i] += d.insert.length;
        if (!measuring) continue;
        for (const m of d.insert) {
          const t0 = sentAt.get(m.seq);
          if (t0 === undefined) continue;
          lat.push(now - t0);
          // Time until the last viewer has the point: the latest arrival per seq.
          allAt.set(m.seq, Math.max(allAt.get(m.seq) ?? 0, now - t0));
        }
      }
    });
    viewers.push(v);
  }
  await Promise.all(viewers.map((v) => v.whenSynced(30_000)));
  let n = 0;
  const push = () => {
    n++;
    run.pushMetric({ step: n, stage: 'pretrain', loss: 6 / Math.sqrt(n), lr: 3e-4, grad_norm: 1, tokens_per_s: 1000 });
  };
  const allHave = async (count, timeoutMs) => {
    const t = Date.now();
    while (received.some((r) => r < count)) {
      if (Date.now() - t > timeoutMs)
        throw new Error(`${kind}: viewers stuck at ${Math.min(...received)}/${count} points`);
      await sleep(5);
    }
  };

  // Warm-up, then timed points every `interval` ms.
  for (let i = 0; i < 50; i++) push();
  await allHave(n, 30_000);
  measuring = true;
  for (let i = 0; i < samples; i++) {
    sentAt.set(n, performance.now()); // seq of the next point = n (0-based)
    push();
    await sleep(interval);
  }
  await allHave(n, 30_000);
  measuring = false;

  // Fill to `points` as fast as the server takes them (each point its own update, as in training).
  const t0 = performance.now();
  while (n < points) {
    const batch = Math.min(500, points - n);
    for (let i = 0; i < batch; i++) push();
    // Backpressure: let the slowest viewer stay within 5000 points.
    while (Math.min(...received) < n - 5000) await sleep(2);
  }
  await allHave(points, 300_000);
  const fillSeconds = (performance.now() - t0) / 1000;
  const flushed = kind === 'lathe' ? await pub.flush(60_000) : true;
  await sleep(1000);
  const mem = rssMb(server.proc.pid);
  const heapUsedMb =
    kind === 'lathe'
      ? (await (await fetch(`${server.url.replace('ws://', 'http://')}/healthz`)).json()).heapUsedMb
      : undefined;
  const logBytes = kind === 'lathe' ? readdirSize(join(dir, 'rooms', 'logs')) : 0;

  pub.close();
  for (const v of viewers) v.close();
  server.proc.kill('SIGTERM');
  await new Promise((r) => server.proc.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
  const all = [...allAt.values()];
  return {
    kind,
    // Per point, until every viewer has it (the cases report these).
    p50: quantile(all, 0.5),
    p95: quantile(all, 0.95),
    p99: quantile(all, 0.99),
    max: Math.max(...all),
    points: all.length,
    // Per delivery (one point to one viewer).
    deliveryP50: quantile(lat, 0.5),
    deliveryP95: quantile(lat, 0.95),
    deliveries: lat.length,
    idleRssMb: idle.rss,
    rssMb: mem.rss,
    peakRssMb: mem.peak,
    heapUsedMb,
    fillSeconds,
    pointsPerSecond: (points - samples - 50) / fillSeconds,
    flushed,
    logBytes,
  };
}

/** Total bytes of the files in a folder (0 if it does not exist). */
function readdirSize(path) {
  let names;
  try {
    names = readdirSync(path);
  } catch {
    return 0;
  }
  return names.reduce((t, f) => t + statSync(join(path, f)).size, 0);
}

/** Runs the rooms benchmark; returns bench cases in the `npm run bench` shape ({ name, ours, reference, unit, ratio }). */
export async function benchRooms({ clients = 20, samples = 400, points = 100_000, interval = 10 } = {}) {
  const opts = { clients, samples, points, interval };
  const ours = await measure('lathe', opts);
  const ref = await measure('stock', opts);
  const what = `${clients} viewers + 1 producer in one room on loopback, ${samples} points ${interval} ms apart`;
  const cases = [
    ...['p50', 'p95'].map((q) => ({
      name: `rooms-propagation-${q}`,
      ours: round(ours[q]),
      reference: round(ref[q]),
      unit: 'ms',
      ratio: round(ref[q] / ours[q], 3),
      goal: q === 'p95' ? 'ours <= 100 ms' : undefined,
      note: `time from the producer's push until all ${clients} viewers have the metric point, ${q} over ${ours.points} points (per single delivery: ${round(ours[q === 'p50' ? 'deliveryP50' : 'deliveryP95'])} ms); ${what}; reference: stock @y/websocket-server (no auth, in memory)`,
    })),
    {
      name: 'rooms-server-rss-100k',
      ours: round(ours.rssMb, 1),
      reference: round(ref.rssMb, 1),
      unit: 'MB',
      ratio: round(ref.rssMb / ours.rssMb, 3),
      note: `room server RSS after ${points} metric points (one update each), ${clients} viewers connected; idle ${round(ours.idleRssMb, 1)} MB (stock ${round(ref.idleRssMb, 1)} MB); ours: V8 heap in use ${ours.heapUsedMb} MB, peak RSS ${round(ours.peakRssMb, 1)} MB, log on disk ${round(ours.logBytes / 1e6, 1)} MB`,
    },
  ];
  return { cases, detail: { ours, reference: ref, options: opts } };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values: a } = parseArgs({
    options: {
      clients: { type: 'string' },
      samples: { type: 'string' },
      points: { type: 'string' },
      interval: { type: 'string' },
      quick: { type: 'boolean', default: false },
    },
  });
  const num = (v, d) => (v === undefined ? d : Number(v));
  const { cases, detail } = await benchRooms({
    clients: num(a.clients, 20),
    samples: num(a.samples, a.quick ? 100 : 400),
    points: num(a.points, a.quick ? 20_000 : 100_000),
    interval: num(a.interval, 10),
  });
  const rows = [
    ['case', 'lathe', 'stock y-websocket', 'ratio (ref/ours)'],
    ...cases.map((c) => [c.name, `${c.ours} ${c.unit}`, `${c.reference} ${c.unit}`, String(c.ratio)]),
  ];
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i])).join('  '));
  const d = detail.ours;
  console.log(
    `lathe: p99 ${round(d.p99)} ms, max ${round(d.max)} ms; fill ${round(d.pointsPerSecond, 0)} points/s; peak RSS ${round(d.peakRssMb, 1)} MB`,
  );
  console.log(JSON.stringify({ cases, detail }));
  process.exit(0);
}

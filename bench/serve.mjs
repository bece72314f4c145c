#!/usr/bin/env node
// `lathe serve` under load: 8 concurrent clients against one client at a time, the same requests.
//   tokens/s:  completion tokens of all requests / wall time (streamed, sampled with a seed per request,
//              so both modes generate the same tokens)
//   TTFT:      request sent → first streamed text, p50 and p95 over every request
// The model: the tiny dense bench shape (2 x 128, context 256) briefly pre-trained on the Tally corpus.
// Ours is the 8-client run; the reference is the one-at-a-time run on the same server. ratio is higher
// is better: ours / reference for tokens/s, reference / ours for TTFT.
//
//   node bench/serve.mjs [--engine tfjs|torch] [--clients 8] [--requests 4] [--max-tokens 64] [--quick]
// Prints the cases as JSON on the last line; `benchServe()` returns them for bench/run.mjs.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('..', import.meta.url));
const TALLY = join(root, 'examples', 'data', 'tally', 'train.jsonl');

/** Pre-trains the bench model (a few steps: enough to write Tally-like text) and returns its run directory. */
async function trainModel(dir, steps) {
  const { Recipe } = await import(pathToFileURL(join(root, 'dist', 'src', 'runs', 'recipe.js')).href);
  const lines = readFileSync(TALLY, 'utf8').split('\n').filter(Boolean).slice(0, 2000);
  writeFileSync(join(dir, 'tally.jsonl'), lines.join('\n') + '\n');
  const r = new Recipe(
    {
      stage: 'pretrain',
      seed: 1,
      backend: 'wasm',
      data: { sources: [{ path: 'tally.jsonl' }], valFraction: 0.02 },
      tokenizer: { vocabSize: 1024 },
      model: { dim: 128, layers: 2, heads: 4, context: 256 },
      train: { steps, batchSize: 8, lr: 0.01, minLr: 0.001, warmupSteps: 3, checkpointEvery: 0 },
      eval: { every: 0, batches: 1 },
    },
    { baseDir: dir },
  );
  const run = await r.run({ out: join(dir, 'model') });
  if (run.summary?.status !== 'completed') throw new Error(`bench model: ${run.summary?.error}`);
  return run.dir.path;
}

/** Starts `lathe serve` on a free port; resolves with the child and its API URL. */
function startServer(run, engine) {
  const args = [join(root, 'bin', 'lathe.js'), 'serve', run, '--port', '0', '--max-batch', '16'];
  if (engine === 'torch') args.push('--engine', 'torch', '--device', 'cpu');
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`lathe serve did not start: ${out}`)), 120_000);
    const on = (d) => {
      out += d;
      const m = / at (http:\/\/\S+)\n/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve({ proc, url: m[1] });
      }
    };
    proc.stdout.on('data', on);
    proc.stderr.on('data', (d) => (out += d));
    proc.once('exit', (c) => reject(new Error(`lathe serve exited ${c}: ${out}`)));
  });
}

/** One streamed completion: time to first text and completion tokens (from the usage it ends with). */
async function request(url, i, maxTokens) {
  const t0 = performance.now();
  const res = await fetch(`${url}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'model',
      prompt: `let px${i % 7} = ${10 + i}\n`,
      max_tokens: maxTokens,
      temperature: 1,
      seed: i,
      stream: true,
    }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttft;
  let tokens = 0;
  let buf = '';
  const dec = new TextDecoder();
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, nl).replace(/^data: /, '');
      buf = buf.slice(nl + 2);
      if (ev === '[DONE]') continue;
      const j = JSON.parse(ev);
      if (ttft === undefined && j.choices?.[0]?.text) ttft = performance.now() - t0;
      if (j.usage) tokens = j.usage.completion_tokens;
    }
  }
  return { ttft: ttft ?? performance.now() - t0, tokens };
}

const pctl = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};

/** 8 clients × n requests at once, then the same requests one at a time. */
async function load(url, clients, perClient, maxTokens) {
  const ids = Array.from({ length: clients * perClient }, (_, i) => i);
  // Warm-up: the first forward passes of each batch size compile and allocate.
  await Promise.all(ids.slice(0, clients).map((i) => request(url, 1000 + i, 4)));
  const t0 = performance.now();
  const together = (
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        const out = [];
        for (let k = 0; k < perClient; k++) out.push(await request(url, c * perClient + k, maxTokens));
        return out;
      }),
    )
  ).flat();
  const concurrentS = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const alone = [];
  for (const i of ids) alone.push(await request(url, i, maxTokens));
  const sequentialS = (performance.now() - t1) / 1000;
  const sum = (rs) => rs.reduce((a, r) => a + r.tokens, 0);
  return {
    concurrent: { tokensPerS: sum(together) / concurrentS, ttft: together.map((r) => r.ttft), tokens: sum(together) },
    sequential: { tokensPerS: sum(alone) / sequentialS, ttft: alone.map((r) => r.ttft), tokens: sum(alone) },
  };
}

/** The serve-throughput rows for one engine. */
export async function benchServe(o = {}) {
  const engine = o.engine ?? 'tfjs';
  const clients = o.clients ?? 8;
  const perClient = o.requests ?? (o.quick ? 2 : 4);
  const maxTokens = o.maxTokens ?? (o.quick ? 32 : 64);
  const name = engine === 'torch' ? 'serve-throughput:torch' : 'serve-throughput';
  const dir = mkdtempSync(join(tmpdir(), 'lathe-bench-serve-'));
  let server;
  try {
    const run = await trainModel(dir, o.quick ? 10 : 30);
    server = await startServer(run, engine);
    const r = await load(server.url, clients, perClient, maxTokens);
    const detail = {
      engine,
      clients,
      requests: clients * perClient,
      maxTokens,
      model: '2 x 128 dense, context 256, vocab 1024',
      tokens: { concurrent: r.concurrent.tokens, sequential: r.sequential.tokens },
    };
    const row = (suffix, ours, reference, unit, ratio, note) => ({
      name: name + suffix,
      ours,
      reference,
      unit,
      ratio,
      note,
      detail,
    });
    const [c50, c95, s50, s95] = [
      pctl(r.concurrent.ttft, 50),
      pctl(r.concurrent.ttft, 95),
      pctl(r.sequential.ttft, 50),
      pctl(r.sequential.ttft, 95),
    ];
    return [
      row(
        '',
        r.concurrent.tokensPerS,
        r.sequential.tokensPerS,
        'tok/s',
        r.concurrent.tokensPerS / r.sequential.tokensPerS,
        `${engine}: ${clients} concurrent clients vs one client at a time, ${clients * perClient} streamed requests of ${maxTokens} tokens`,
      ),
      row(':ttft-p50', c50, s50, 'ms', s50 / c50, `${engine}: time to first token, p50, ${clients} clients vs one`),
      row(':ttft-p95', c95, s95, 'ms', s95 / c95, `${engine}: time to first token, p95, ${clients} clients vs one`),
    ];
  } finally {
    server?.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values: a } = parseArgs({
    options: {
      engine: { type: 'string', default: 'tfjs' },
      clients: { type: 'string' },
      requests: { type: 'string' },
      'max-tokens': { type: 'string' },
      quick: { type: 'boolean', default: false },
    },
  });
  const cases = await benchServe({
    engine: a.engine,
    clients: a.clients ? Number(a.clients) : undefined,
    requests: a.requests ? Number(a.requests) : undefined,
    maxTokens: a['max-tokens'] ? Number(a['max-tokens']) : undefined,
    quick: a.quick,
  });
  for (const c of cases)
    console.error(
      `${c.name.padEnd(30)} ${c.ours.toFixed(1)} vs ${c.reference.toFixed(1)} ${c.unit}  ratio ${c.ratio.toFixed(2)}`,
    );
  console.log(JSON.stringify(cases));
}

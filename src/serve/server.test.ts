// `lathe serve` as a user runs it: the CLI on a trained run, talked to by the official openai Python
// client (non-streaming and streaming), greedy text equal to `lathe generate`, concurrent requests
// batched, OpenAI-shaped errors naming the field, a bearer token, and a client that hangs up
// mid-stream freeing its row.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lathe, ROOT, scratch } from '../../test/helpers.js';
import { miniBase } from '../../test/post-helpers.js';
import { PYTHON } from '../export/test/hf-python.js';
import { runs } from '../index.js';
import type { Serving } from './index.js';

const TOKEN = 'serve-test-token-0123456789abcdef';
const PROMPT = 'let px = ';
const MAX = 20;

let dir: string;
let run: string;
let cli: ChildProcess | undefined;
let url: string;

/** Starts `lathe serve` and resolves with the URL it prints on stdout. */
function startCli(args: string[]): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [join(ROOT, 'bin', 'lathe.js'), 'serve', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  return new Promise((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = / at (http:\/\/\S+)\n/.exec(out);
      if (m) resolve({ proc, url: m[1]! });
    });
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    proc.on('exit', (code) => reject(new Error(`lathe serve exited ${code}: ${err}`)));
  });
}

beforeAll(async () => {
  dir = await scratch('lathe-serve-');
  run = (await miniBase(dir, { backend: 'cpu' })).base;
  await writeFile(join(dir, 'token'), TOKEN + '\n', { mode: 0o600 });
  ({ proc: cli, url } = await startCli([run, '--port', '0', '--token-file', join(dir, 'token'), '--max-batch', '8']));
}, 180_000);

afterAll(() => {
  cli?.kill('SIGTERM');
});

interface ClientReport {
  models: string[];
  completion: { text: string; finish: string; usage: Usage; object: string };
  completion_stream: { text: string; chunks: number; finishes: string[]; usage: Usage | null };
  chat: { text: string; role: string; finish: string; usage: Usage; object: string };
  chat_stream: { text: string; roles: string[]; finishes: string[]; usage: Usage | null; usage_chunks: number };
  sampled: { a: string[]; b: string[]; index: number[]; usage: Usage };
  stopped: { text: string; finish: string };
  batch_prompts: number[];
  concurrent: { alone: string[]; together: string[] };
  errors: Record<string, { class: string; status: number; param: string | null; code: string | null; message: string }>;
}
interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

describe('lathe serve with the openai Python client', () => {
  let report: ClientReport;
  beforeAll(() => {
    const r = spawnSync(
      PYTHON,
      [join(ROOT, 'src', 'serve', 'test', 'openai_client.py'), url, TOKEN, PROMPT, String(MAX)],
      { encoding: 'utf8', timeout: 300_000 },
    );
    if (r.status !== 0) throw new Error(`openai_client.py exited ${r.status}: ${r.stderr}`);
    report = JSON.parse(r.stdout) as ClientReport;
  }, 300_000);

  it('lists the model, and greedy completions equal lathe generate, streamed or not', () => {
    expect(report.models).toEqual(['mini-base']);
    const g = lathe(['generate', run, '--prompt', PROMPT, '--temperature', '0', '--max-tokens', String(MAX)]);
    expect(g.status, g.stderr).toBe(0);
    const generated = g.stdout.slice(0, -1);
    expect(generated.length).toBeGreaterThan(0);
    expect(report.completion.text).toBe(generated);
    expect(report.completion.object).toBe('text_completion');
    expect(report.completion_stream.text).toBe(generated);
    expect(report.completion_stream.chunks).toBeGreaterThan(1);
    expect(report.completion_stream.finishes).toEqual([report.completion.finish]);
    // Usage: bos + the prompt's tokens; the completion's tokens.
    const u = report.completion.usage;
    expect(u.prompt_tokens).toBeGreaterThan(1);
    expect(u.total_tokens).toBe(u.prompt_tokens + u.completion_tokens);
    if (report.completion.finish === 'length') expect(u.completion_tokens).toBe(MAX);
    expect(report.completion_stream.usage).toEqual(u);
  });

  it('chat completions use the chat template; the stream has the role first and a usage chunk', () => {
    expect(report.chat.object).toBe('chat.completion');
    expect(report.chat.role).toBe('assistant');
    expect(report.chat_stream.text).toBe(report.chat.text);
    expect(report.chat_stream.roles).toEqual(['assistant']);
    expect(report.chat_stream.finishes).toEqual([report.chat.finish]);
    expect(report.chat_stream.usage_chunks).toBe(1);
    expect(report.chat_stream.usage).toEqual(report.chat.usage);
    // <|bos|><|system|>Tally.<|end|><|user|>let px = 4<|end|><|assistant|>: six special tokens and the text's.
    expect(report.chat.usage.prompt_tokens).toBeGreaterThan(8);
  });

  it('n, seed, temperature, top_p and stop', () => {
    expect(report.sampled.index).toEqual([0, 1, 2]);
    expect(report.sampled.a).toEqual(report.sampled.b);
    expect(new Set(report.sampled.a).size).toBeGreaterThan(1);
    expect(report.sampled.usage.completion_tokens).toBeGreaterThan(MAX);
    expect(report.stopped.text).not.toContain('\n');
    expect(report.batch_prompts).toEqual([0, 1]);
  });

  it('eight concurrent clients get what each gets alone', () => {
    expect(new Set(report.concurrent.alone).size).toBeGreaterThan(4);
    expect(report.concurrent.together).toEqual(report.concurrent.alone);
  });

  it('bad requests get OpenAI-shaped 4xx errors that name the field', () => {
    const e = report.errors;
    expect(e.model).toMatchObject({ class: 'NotFoundError', status: 404, param: 'model', code: 'model_not_found' });
    expect(e.temperature).toMatchObject({ class: 'BadRequestError', status: 400, param: 'temperature' });
    expect(e.max_tokens).toMatchObject({ status: 400, param: 'max_tokens' });
    expect(e.context).toMatchObject({ status: 400, param: 'prompt', code: 'context_length_exceeded' });
    expect(e.context!.message).toMatch(/maximum context length is 48 tokens/);
    expect(e.context_chat).toMatchObject({ status: 400, param: 'messages', code: 'context_length_exceeded' });
    expect(e.budget).toMatchObject({ status: 400, param: 'max_tokens', code: 'context_length_exceeded' });
    expect(e.role).toMatchObject({ status: 400, param: 'messages[0].role' });
    expect(e.unknown).toMatchObject({ status: 400, param: 'beam_width' });
    expect(e.unknown!.message).toBe('Unrecognized request argument supplied: beam_width');
    expect(e.penalty).toMatchObject({ status: 400, param: 'presence_penalty' });
    expect(e.auth).toMatchObject({ class: 'AuthenticationError', status: 401, code: 'invalid_api_key' });
  });
});

describe('the server under load and hang-ups (runs.serve, as a notebook calls it)', () => {
  let s: Serving;
  const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  beforeAll(async () => {
    s = await runs.serve(await runs.open(run), { token: TOKEN, maxBatch: 4 });
  }, 60_000);
  afterAll(async () => {
    await s?.close();
  });

  const health = async () =>
    (await (await fetch(s.url.replace(/\/v1$/, '/health'))).json()) as {
      rows: number;
      waiting: number;
      peakBatch: number;
      steps: number;
    };

  it('binds 127.0.0.1 by default, needs the token, and batches concurrent requests into shared steps', async () => {
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    const noAuth = await fetch(`${s.url}/models`);
    expect(noAuth.status).toBe(401);
    expect(((await noAuth.json()) as { error: { code: string } }).error.code).toBe('invalid_api_key');
    const before = await health();
    const body = (i: number) =>
      JSON.stringify({ model: s.model, prompt: `let q${i} = `, max_tokens: 12, temperature: 0 });
    const replies = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        fetch(`${s.url}/completions`, { method: 'POST', headers: auth, body: body(i) }),
      ),
    );
    for (const r of replies) expect(r.status).toBe(200);
    const after = await health();
    // Six requests of up to 12 tokens, four rows at a time: far fewer steps than 6 × 12 one by one.
    expect(after.peakBatch).toBeGreaterThanOrEqual(3);
    expect(after.peakBatch).toBeLessThanOrEqual(4);
    expect(after.steps - before.steps).toBeLessThan(40);
    expect(after.rows).toBe(0);
  }, 60_000);

  it('a client that disconnects mid-stream frees its row', async () => {
    const ctl = new AbortController();
    const r = await fetch(`${s.url}/completions`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ model: s.model, prompt: 'let a = ', max_tokens: 40, temperature: 1, stream: true }),
      signal: ctl.signal,
    });
    expect(r.headers.get('content-type')).toBe('text/event-stream');
    const reader = r.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toMatch(/^data: \{/);
    const stepsAtHangUp = (await health()).steps;
    ctl.abort();
    let h = await health();
    for (let i = 0; i < 100 && h.rows > 0; i++) {
      await new Promise((res) => setTimeout(res, 20));
      h = await health();
    }
    expect(h.rows).toBe(0);
    // It stopped soon after the hang-up, far short of its 40 tokens.
    expect(h.steps - stepsAtHangUp).toBeLessThan(20);
  }, 60_000);

  it('answers bad JSON, unknown routes and methods with OpenAI-shaped errors and stays up', async () => {
    const bad = await fetch(`${s.url}/chat/completions`, { method: 'POST', headers: auth, body: '{"model": ' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    expect((await fetch(`${s.url}/embeddings`, { method: 'POST', headers: auth, body: '{}' })).status).toBe(404);
    expect((await fetch(`${s.url}/completions`, { headers: auth })).status).toBe(405);
    const ok = await fetch(`${s.url}/models`, { headers: auth });
    expect(((await ok.json()) as { data: { id: string }[] }).data[0]!.id).toBe('mini-base');
  });
});

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { POST, tallyBase } from '../../test/post-helpers.js';
import { checkRoles, sftEvalBatches, SftSampler, toBatch } from '../data/chat.js';
import type { PostManifest } from '../data/post.js';
import { sft } from '../runs/recipe.js';
import { Tokenizer } from '../tokenizer/index.js';

describe('SFT data', () => {
  it('masks every token but the assistant turns (weight 0 turns excluded) and packs whole conversations', async () => {
    const tok = await Tokenizer.train(['hello there how are you', 'fine thanks'], { vocabSize: 300 });
    const chat = tok.renderChat([
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'skip me', weight: 0 },
      { role: 'user', content: 'again' },
      { role: 'assistant', content: 'ok' },
    ]);
    const trained = chat.ids.filter((_, i) => chat.mask[i]);
    expect(tok.decode(trained)).toBe('ok<|end|>');
    // Packing: two copies fit one row of 2·len; targets count where the target token is trained.
    const sampler = new SftSampler([chat, chat], {
      seq: 2 * chat.ids.length - 1,
      batch: 1,
      seed: 1,
      pad: tok.special.pad,
      packing: true,
    });
    const b = sampler.next();
    expect(b.examples).toBe(2);
    const w = Array.from(b.weights!);
    expect(w.reduce((a, x) => a + x, 0)).toBe(2 * trained.length);
    for (let t = 0; t < b.seq; t++) if (w[t]) expect(chat.mask[(t + 1) % chat.ids.length]).toBe(1);
    // Without packing: one per row, padded with weight 0.
    const one = toBatch([chat], chat.ids.length + 10, tok.special.pad);
    expect(
      Array.from(one.weights!)
        .slice(chat.ids.length - 1)
        .every((x) => x === 0),
    ).toBe(true);
    expect(sftEvalBatches([chat, chat, chat], { seq: 100, batch: 2, count: 5, pad: 0, packing: false })).toHaveLength(
      2,
    );
  });

  it('checks roles: system first, then user/assistant alternating, ending with the assistant', () => {
    const m = (...roles: string[]) => roles.map((role) => ({ role: role as 'user', content: 'x' }));
    expect(checkRoles(m('system', 'user', 'assistant', 'user', 'assistant'))).toBeUndefined();
    expect(checkRoles(m('user', 'user', 'assistant'))).toMatch(
      /messages\[1\]\.role is "user" where "assistant" is expected: roles out of order/,
    );
    expect(checkRoles(m('assistant', 'user'))).toMatch(/messages\[0\]\.role is "assistant" where "user"/);
    expect(checkRoles(m('user', 'assistant', 'system'))).toMatch(/messages\[2\]: a system message must come before/);
    expect(checkRoles(m('user', 'assistant', 'user'))).toMatch(/must end with an assistant message/);
    expect(checkRoles(m('user', 'tool'))).toMatch(/"tool" is not supported/);
    expect(
      checkRoles([
        { role: 'user', content: 'q' },
        { role: 'assistant', content: '  ' },
      ]),
    ).toMatch(/empty assistant message/);
  });
});

describe('SFT', () => {
  let dir: string;
  let base: string;
  beforeAll(async () => {
    dir = await scratch('lathe-sft-');
    base = await tallyBase(dir);
  });

  it('assistant-token loss falls on held-out chats (wasm, 30 steps from a 100-step base)', async () => {
    const r = sft(
      {
        from: base,
        backend: 'wasm',
        seed: 2,
        data: { sources: [{ path: join(POST, 'sft.jsonl') }] },
        train: { steps: 30, batchSize: 8, lr: 2e-3, warmupSteps: 3, checkpointEvery: 0 },
        eval: { every: 10, batches: 4, onStart: true },
      },
      { baseDir: dir },
    );
    const run = await r.run({ out: join(dir, 'sft') });
    expect(run.summary!.status).toBe('completed');
    const ms = await run.dir.readMetrics();
    expect(ms.every((m) => m.stage === 'sft' && typeof m.step === 'number')).toBe(true);
    const start = ms.find((m) => m.step === 0)!;
    const end = ms.find((m) => m.step === 30)!;
    if (process.env.LATHE_MEASURE) console.log('SFT effect', start, end);
    // Measured (wasm, seed 2, 42 held-out chats): assistant-token loss 5.75 → 2.86, token accuracy 0.16 → 0.47.
    expect(start.eval_loss! - end.eval_loss!).toBeGreaterThan(2);
    expect(end.eval_token_accuracy as number).toBeGreaterThan((start.eval_token_accuracy as number) + 0.25);
    expect(
      ms.filter((m) => m.step > 0).every((m) => typeof m.loss === 'number' && typeof m.token_accuracy === 'number'),
    ).toBe(true);
    const prepared = JSON.parse(await readFile(join(run.dir.dataDir, 'rows.json'), 'utf8')) as PostManifest;
    expect(prepared.examples.train + prepared.examples.val).toBeGreaterThan(390); // of 400: a few lose every trained token to the 128-token context
    // The run directory holds its model like any other: tokenizer, lock with the base's architecture.
    expect(run.lock.recipe.stage).toBe('sft');
    expect((run.lock as { base?: { kind: string } }).base?.kind).toBe('run');
  });

  it('malformed chats: fail names file:line; skip counts them and trains on the rest', async () => {
    const rows = [
      {
        messages: [
          { role: 'user', content: 'q1' },
          { role: 'assistant', content: 'a1' },
        ],
      },
      {
        messages: [
          { role: 'assistant', content: 'a' },
          { role: 'user', content: 'q' },
        ],
      },
      {
        messages: [
          { role: 'user', content: 'q' },
          { role: 'assistant', content: '' },
        ],
      },
      {
        messages: [
          { role: 'user', content: 'q' },
          { role: 'tool', content: 'x' },
        ],
      },
      {
        messages: [
          { role: 'user', content: 'q' },
          { role: 'assistant', content: 'a', weight: 0 },
        ],
      },
      { text: 'no chat' },
      {
        messages: [
          { role: 'user', content: 'q2' },
          { role: 'assistant', content: 'a2' },
        ],
      },
    ];
    const file = join(dir, 'bad-chat.jsonl');
    await writeFile(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n{"messages": [\n');
    const fail = sft(
      {
        from: base,
        backend: 'wasm',
        data: { sources: [{ path: file }] },
        train: { steps: 2, batchSize: 2, warmupSteps: 0 },
      },
      { baseDir: dir },
    );
    const failed = await fail.start({ out: join(dir, 'sft-bad-fail') });
    await expect(failed.done).rejects.toThrow(
      `${file}:2: messages[0].role is "assistant" where "user" is expected: roles out of order`,
    );
    expect((await failed.dir.readSummary())!.status).toBe('failed');

    const skip = sft(
      {
        from: base,
        backend: 'wasm',
        data: { sources: [{ path: file }], onError: 'skip', valFraction: 0 },
        train: { steps: 2, batchSize: 2, warmupSteps: 0 },
      },
      { baseDir: dir },
    );
    const run = await skip.run({ out: join(dir, 'sft-bad-skip') });
    expect(run.summary!.status).toBe('completed');
    const m = JSON.parse(await readFile(join(run.dir.dataDir, 'rows.json'), 'utf8')) as PostManifest;
    expect(m.examples.train).toBe(2);
    expect(m.rejected).toBe(6);
    expect(m.rejections.map((x) => `${x.line}: ${x.reason}`)).toEqual([
      '2: messages[0].role is "assistant" where "user" is expected: roles out of order (system first, then user and assistant alternating, starting with user)',
      '3: messages[1]: empty assistant message',
      '4: messages[1].role "tool" is not supported after a user message: each tool result answers one of the tool_calls of the assistant message before it',
      '5: every assistant message has weight 0; nothing to train on',
      '6: expected "messages" (a chat) or "prompt" and "completion"; fields present: text',
      expect.stringMatching(/^8: invalid JSON/),
    ]);
    const events = await run.dir.readEvents();
    expect(events.find((e) => e.type === 'prepared')!.message).toMatch(
      /2 conversations for training, 0 held out; 0 duplicates removed, 6 rows rejected \(first: .*bad-chat\.jsonl:2: /,
    );
  });
});

/**
 * Continued pre-training from an open model: a Qwen3-shaped base trained on Tally and saved as a
 * Hugging Face folder is taken further on a new corpus with `from`, keeping the base's tokenizer
 * plus added tokens (mean-initialised rows). Loss falls on the new corpus; with replay of the
 * base's data, held-out loss on that data rises less than without it. The run resumes to the bit,
 * and exports back as a Qwen3 folder that transformers loads with the added token.
 */
import { readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { evalBatches } from '../src/data/batches.js';
import type { PreparedData } from '../src/data/prepare.js';
import { evaluateLoss } from '../src/eval/loss.js';
import { exportHf } from '../src/export/hf.js';
import { maxAbsDiff, runHf, type HfCheck } from '../src/export/test/hf-python.js';
import { Rng } from '../src/random.js';
import { loadModel, open, resume } from '../src/runs/index.js';
import { Recipe } from '../src/runs/recipe.js';
import { TIMING_KEYS, type Metric } from '../src/runs/rundir.js';
import { lathe, scratch, tallySlice } from './helpers.js';

const NEW_TOKEN = '<ledger>';
const MODEL = { dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 32, family: 'qwen3', qkNorm: true };

/** A small English-like ledger corpus, unlike Tally: the "new domain" (seeded, so stable). */
function ledger(docs: number): string {
  const rng = new Rng(7);
  const pick = <T>(xs: readonly T[]) => xs[rng.int(xs.length)]!;
  const who = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank'];
  const what = ['apples', 'pears', 'nails', 'rope', 'cloth', 'salt'];
  const verb = ['paid', 'owes', 'sent', 'lent', 'sold'];
  const day = ['monday', 'tuesday', 'friday', 'sunday'];
  const lines: string[] = [];
  for (let d = 0; d < docs; d++) {
    const s = Array.from(
      { length: 4 },
      () => `${NEW_TOKEN} ${pick(who)} ${pick(verb)} ${pick(who)} ${1 + rng.int(40)} ${pick(what)} on ${pick(day)}.`,
    );
    lines.push(JSON.stringify({ text: s.join(' ') }));
  }
  return lines.join('\n') + '\n';
}

const last = (ms: Metric[], key: string) => ms.filter((m) => typeof m[key] === 'number').at(-1)![key] as number;
const at0 = (ms: Metric[], key: string) => ms.find((m) => m.step === 0)![key] as number;

describe('continued pre-training from a Hugging Face model (from, addTokens, replay)', () => {
  let dir: string;
  let tally: string;
  let newData: string;
  let baseHf: string;
  // The replay run, which the resume test compares against.
  let mixedDir: string | undefined;
  const cpt = (name: string, over: Record<string, unknown> = {}) =>
    new Recipe(
      {
        stage: 'pretrain',
        name,
        seed: 5,
        backend: 'cpu',
        from: baseHf,
        data: { sources: [{ path: newData }], valFraction: 0.1, ...over },
        tokenizer: { addTokens: [NEW_TOKEN] },
        train: { steps: 30, batchSize: 8, lr: 3e-3, minLr: 3e-4, warmupSteps: 3, checkpointEvery: 10 },
        eval: { every: 10, batches: 2, onStart: true },
      },
      { baseDir: dir },
    );

  beforeAll(async () => {
    dir = await scratch('lathe-cpt-');
    tally = await tallySlice(dir, 400);
    newData = join(dir, 'ledger.jsonl');
    await writeFile(newData, ledger(300));
    // The "open model": a Qwen3-shaped decoder trained on Tally, saved as an HF folder.
    const base = await new Recipe(
      {
        stage: 'pretrain',
        seed: 3,
        backend: 'cpu',
        data: { sources: [{ path: tally }], valFraction: 0.1 },
        tokenizer: { vocabSize: 320 },
        model: MODEL,
        train: { steps: 60, batchSize: 8, lr: 1e-2, minLr: 1e-3, warmupSteps: 5, checkpointEvery: 0 },
        eval: { every: 0, batches: 2 },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'base') });
    expect(base.summary!.status, base.summary!.error).toBe('completed');
    baseHf = join(dir, 'base-hf');
    expect((await exportHf(base.dir.path, baseHf)).architecture).toBe('Qwen3ForCausalLM');
  }, 300_000);

  it('validates, and lathe init pretrain --from --replay writes a recipe that validates', async () => {
    const r = lathe([
      'init',
      'pretrain',
      '--data',
      newData,
      '--from',
      baseHf,
      '--replay',
      tally,
      '--out',
      join(dir, 'cpt.json'),
    ]);
    expect(r.status, r.stderr).toBe(0);
    const written = JSON.parse(await readFile(join(dir, 'cpt.json'), 'utf8')) as Record<string, unknown>;
    expect(written).toMatchObject({ stage: 'pretrain', from: 'base-hf', data: { replay: { path: 'tally.jsonl' } } });
    expect(written.model).toBeUndefined();
    expect(lathe(['validate', join(dir, 'cpt.json')]).status).toBe(0);
    // A fresh pretrain cannot replay or add tokens; continued pre-training cannot name a model.
    await writeFile(
      join(dir, 'bad.json'),
      JSON.stringify({
        stage: 'pretrain',
        data: { sources: [{ path: 'ledger.jsonl' }], replay: { path: 'tally.jsonl' } },
        tokenizer: { addTokens: ['x'] },
      }),
    );
    const bad = lathe(['validate', join(dir, 'bad.json')]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/data\.replay: mixes the base model's kind of data back in/);
    expect(bad.stderr).toMatch(/tokenizer\.addTokens: adds tokens to a base model's tokenizer \(with from\)/);
    await writeFile(
      join(dir, 'bad2.json'),
      JSON.stringify({
        stage: 'pretrain',
        from: 'base-hf',
        data: { sources: [{ path: 'ledger.jsonl' }] },
        model: { dim: 64 },
        tokenizer: { vocabSize: 500 },
      }),
    );
    const bad2 = lathe(['validate', join(dir, 'bad2.json')]);
    expect(bad2.status).toBe(2);
    expect(bad2.stderr).toMatch(/model: comes from the base model named by from/);
    expect(bad2.stderr).toMatch(/tokenizer\.vocabSize: the base model's tokenizer is kept with from/);
  });

  it('loss falls on the new corpus; replay limits the rise of held-out loss on the base data', async () => {
    const plain = await cpt('no-replay').run({ out: join(dir, 'no-replay') });
    const mixed = await cpt('replay', { replay: { path: tally, weight: 0.3 } }).run({ out: join(dir, 'replay') });
    for (const r of [plain, mixed]) expect(r.summary!.status, r.summary!.error).toBe('completed');
    mixedDir = mixed.dir.path;
    // The base is pinned by hash, its architecture and tokenizer kept, the new token added.
    expect(mixed.lock.base).toMatchObject({ kind: 'hf', path: baseHf });
    expect(mixed.lock.recipe.model).toMatchObject({ family: 'qwen3', qkNorm: true, dim: 32 });
    const prepared = JSON.parse(await readFile(join(mixed.dir.dataDir, 'prepared.json'), 'utf8')) as PreparedData;
    const baseVocab = JSON.parse(await readFile(join(baseHf, 'config.json'), 'utf8')).vocab_size as number;
    expect(prepared.addedTokens).toEqual([{ content: NEW_TOKEN, id: baseVocab }]);
    const { model: replayModel, tokenizer } = await loadModel(mixed.dir.path);
    expect(tokenizer.encode(`${NEW_TOKEN} alice`)[0]).toBe(baseVocab);
    expect(replayModel.spec.vocabSize).toBe(baseVocab + 1);
    const events = await readFile(join(mixed.dir.path, 'events.jsonl'), 'utf8');
    expect(events).toMatch(/continued pre-training from the Hugging Face model .*added 1 token\(s\) \(\\"<ledger>\\"=/);

    // Held-out loss on the base's data (the replay source's held-out split) for both final models.
    const replaySource = prepared.sources.find((s) => s.replay)!;
    const baseBatches = evalBatches([replaySource], { seq: 32, batch: 8, count: 2 });
    const { model: plainModel } = await loadModel(plain.dir.path);
    const [pm, mm] = [await plain.dir.readMetrics(), await mixed.dir.readMetrics()];
    const figures = {
      newBefore: at0(mm, 'eval_loss_new'),
      newAfterNoReplay: last(pm, 'eval_loss'),
      newAfterReplay: last(mm, 'eval_loss_new'),
      baseBefore: at0(mm, 'eval_loss_replay'),
      baseAfterNoReplay: (await evaluateLoss(plainModel, baseBatches))!,
      baseAfterReplay: (await evaluateLoss(replayModel, baseBatches))!,
    };
    await plainModel.dispose();
    await replayModel.dispose();
    const riseNoReplay = figures.baseAfterNoReplay - figures.baseBefore;
    const riseReplay = figures.baseAfterReplay - figures.baseBefore;
    console.log(
      `[cpt] new-corpus held-out loss ${figures.newBefore.toFixed(3)} -> ${figures.newAfterNoReplay.toFixed(3)} (no replay), ${figures.newAfterReplay.toFixed(3)} (replay 0.3); ` +
        `base-data held-out loss ${figures.baseBefore.toFixed(3)} -> ${figures.baseAfterNoReplay.toFixed(3)} (no replay, +${riseNoReplay.toFixed(3)}), ` +
        `${figures.baseAfterReplay.toFixed(3)} (replay, +${riseReplay.toFixed(3)})`,
    );
    // The base's step-0 loss on its own data matches what the same batches give at the start of the plain run.
    expect(at0(pm, 'eval_loss')).toBeCloseTo(figures.newBefore, 5);
    expect(figures.newAfterNoReplay).toBeLessThan(figures.newBefore - 1);
    expect(figures.newAfterReplay).toBeLessThan(figures.newBefore - 1);
    expect(riseNoReplay).toBeGreaterThan(0.1);
    expect(riseReplay).toBeLessThan(riseNoReplay * 0.7);
  }, 300_000);

  it('resumes to the bit, and exports back as Qwen3ForCausalLM with the added token', async () => {
    if (!mixedDir) throw new Error('the replay run of the test above did not complete');
    const straight = await open(mixedDir);
    const split = await cpt('replay', { replay: { path: tally, weight: 0.3 } }).run({
      out: join(dir, 'split'),
      stopAfter: 15,
    });
    expect(split.summary!.status).toBe('interrupted');
    const again = await resume(split.dir.path);
    await again.done;
    const strip = (ms: Metric[]) =>
      ms.map((m) => Object.fromEntries(Object.entries(m).filter(([k]) => !TIMING_KEYS.has(k))));
    expect(strip(await again.dir.readMetrics())).toEqual(strip(await straight.dir.readMetrics()));

    const out = join(dir, 'cpt-hf');
    expect((await exportHf(straight.dir.path, out)).architecture).toBe('Qwen3ForCausalLM');
    const { model, tokenizer } = await loadModel(straight.dir.path);
    const ids = tokenizer.encode(`${NEW_TOKEN} alice paid bob 3 salt on monday.`);
    const [hf] = runHf([
      { op: 'check', dir: out, prompt: ids, max_new_tokens: 4, texts: [`${NEW_TOKEN} alice`] },
    ]) as HfCheck[];
    expect(hf!.class).toBe('Qwen3ForCausalLM');
    expect(hf!.texts[0]).toEqual(tokenizer.encode(`${NEW_TOKEN} alice`));
    const flat = await model.logits(ids);
    const v = model.spec.vocabSize;
    const ours = ids.map((_, r) => Array.from(flat.subarray(r * v, (r + 1) * v)));
    expect(maxAbsDiff(ours, hf!.logits)).toBeLessThanOrEqual(1e-4);
    await model.dispose();
  }, 300_000);

  it('LoRA continued pre-training (from + train.lora): only adapters train on the frozen HF base, loss falls, the model loads merged', async () => {
    const run = await new Recipe(
      {
        stage: 'pretrain',
        name: 'cpt-lora',
        seed: 5,
        backend: 'cpu',
        from: baseHf,
        data: { sources: [{ path: newData }], valFraction: 0.1 },
        train: {
          steps: 12,
          batchSize: 8,
          lr: 1e-2,
          warmupSteps: 2,
          checkpointEvery: 0,
          lora: {
            rank: 8,
            alpha: 16,
            targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
          },
        },
        eval: { every: 12, batches: 2, onStart: true },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'cpt-lora') });
    expect(run.summary!.status, run.summary!.error).toBe('completed');
    expect(run.lock.base).toMatchObject({ kind: 'hf', path: baseHf });
    const ck = run.dir.checkpointPath(12);
    expect(
      readdirSync(ck)
        .filter((f) => f.endsWith('.safetensors'))
        .sort(),
    ).toEqual(['adapter.safetensors', 'optimizer.safetensors']);
    const events = await readFile(join(run.dir.path, 'events.jsonl'), 'utf8');
    expect(events).toMatch(
      /continued pre-training from the Hugging Face model .*LoRA rank 8 on q_proj.* the base frozen/,
    );
    const ms = await run.dir.readMetrics();
    const [before, after] = [at0(ms, 'eval_loss'), last(ms, 'eval_loss')];
    console.log(`[cpt-lora] new-corpus held-out loss ${before.toFixed(3)} -> ${after.toFixed(3)} (12 LoRA steps)`);
    expect(after).toBeLessThan(before - 0.3);
    // The run's model is the base with the adapters merged: it gives the run's final eval loss.
    const { model } = await loadModel(run.dir.path);
    const prepared = JSON.parse(await readFile(join(run.dir.dataDir, 'prepared.json'), 'utf8')) as PreparedData;
    const loss = await evaluateLoss(model, evalBatches(prepared.sources, { seq: 32, batch: 8, count: 2 }));
    await model.dispose();
    expect(loss).toBeCloseTo(after, 4);
  }, 300_000);
});

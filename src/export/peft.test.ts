/**
 * The PEFT round trip: a LoRA SFT run started from an HF folder exports its adapter with
 * `--format peft`; the real `peft` library loads it on that folder with PeftModel.from_pretrained
 * and gives Lathe's logits; `--merge` writes an HF folder transformers loads with the same logits.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { lathe, scratch, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { POST } from '../../test/post-helpers.js';
import { readSafetensors } from '../model/safetensors.js';
import { loadModel } from '../runs/index.js';
import { Recipe, sft } from '../runs/recipe.js';
import type { Run } from '../runs/run.js';
import { exportHf } from './hf.js';
import { exportPeft } from './peft.js';
import { maxAbsDiff, runHf, type HfCheck, type PeftCheck } from './test/hf-python.js';

const PROMPT = [2, 40, 41, 42, 100, 7, 250, 19, 33, 3, 60, 61];

describe('PEFT export of a LoRA run', () => {
  let dir: string;
  let hfBase: string;
  let run: Run;
  beforeAll(async () => {
    dir = await scratch('lathe-peft-');
    const data = await tallySlice(dir, 400);
    const pre = await new Recipe(
      tinyRecipe(data, {
        model: { dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 64 },
        train: { steps: 15, batchSize: 4, lr: 0.01, minLr: 0.001, warmupSteps: 2, checkpointEvery: 0 },
      }),
      { baseDir: dir },
    ).run({ out: join(dir, 'base') });
    expect(pre.summary!.status).toBe('completed');
    hfBase = join(dir, 'hf-base');
    await exportHf(pre.dir.path, hfBase);
    // LoRA SFT from the HF folder, every projection adapted, with a learning rate that moves them well off zero.
    run = await sft(
      {
        from: hfBase,
        backend: 'cpu',
        seed: 4,
        data: { sources: [{ path: join(POST, 'sft.jsonl') }] },
        train: {
          steps: 8,
          batchSize: 4,
          lr: 2e-2,
          warmupSteps: 1,
          checkpointEvery: 0,
          lora: {
            rank: 4,
            alpha: 8,
            targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
          },
        },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'lora') });
    expect(run.summary!.status, run.summary!.error).toBe('completed');
  }, 300_000);

  it('the checkpoint holds the adapters alone, and names the base by hash', async () => {
    const ck = run.dir.checkpointPath(8);
    expect(existsSync(join(ck, 'model.safetensors'))).toBe(false);
    const st = await readSafetensors(join(ck, 'adapter.safetensors'));
    expect(st.tensors.size).toBe(2 * 7 * 2);
    const state = JSON.parse(await readFile(join(ck, 'state.json'), 'utf8')) as { lora: { base: string } };
    const lock = run.lock as { base?: { kind: string; sha256: string } };
    expect(lock.base?.kind).toBe('hf');
    expect(state.lora.base).toBe(lock.base!.sha256);
    const opt = await readSafetensors(join(ck, 'optimizer.safetensors'));
    expect([...opt.tensors.keys()].filter((k) => k.startsWith('m.')).sort()).toEqual(
      [...st.tensors.keys()].map((k) => `m.${k}`).sort(),
    );
  });

  it('peft loads the adapter on the HF base with PeftModel.from_pretrained: same logits within 1e-4; --merge gives them too', async () => {
    const adapterDir = join(dir, 'adapter');
    const r = await exportPeft(run.dir.path, adapterDir);
    expect(r.files).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect(r.base.path).toBe(hfBase);
    const cfg = JSON.parse(await readFile(join(adapterDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, base_model_name_or_path: hfBase });
    const names = [...(await readSafetensors(join(adapterDir, 'adapter_model.safetensors'))).tensors.keys()];
    expect(names).toContain('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight');
    const merged = join(dir, 'merged');
    const m = await exportPeft(run.dir.path, merged, { merge: true });
    expect(m.merged).toBe(true);
    const [p, hf] = runHf([
      { op: 'peft', base: hfBase, adapter: adapterDir, prompt: PROMPT },
      { op: 'check', dir: merged, prompt: PROMPT, max_new_tokens: 1, tokenizer: false },
    ]) as [PeftCheck, HfCheck];
    expect(p.complaints).toEqual([]);
    expect(p.modules).toHaveLength(2 * 7);
    const { model } = await loadModel(run.dir.path);
    const v = model.spec.vocabSize;
    const flat = await model.logits(PROMPT);
    await model.dispose();
    const ours = Array.from({ length: PROMPT.length }, (_, i) => Array.from(flat.subarray(i * v, (i + 1) * v)));
    const peftDiff = maxAbsDiff(ours, p.adapted);
    const mergedDiff = maxAbsDiff(ours, hf.logits);
    const fromBase = maxAbsDiff(ours, p.base);
    console.log(
      `[peft] max |logit diff|: PEFT on the HF base vs Lathe ${peftDiff.toExponential(3)}; merged HF folder vs Lathe ${mergedDiff.toExponential(3)}; the adapters move the logits by ${fromBase.toFixed(3)}`,
    );
    expect(peftDiff).toBeLessThanOrEqual(1e-4);
    expect(mergedDiff).toBeLessThanOrEqual(1e-4);
    // The adapters matter: without them the logits are elsewhere.
    expect(fromBase).toBeGreaterThan(0.05);
  }, 300_000);

  it('the CLI: --format peft writes the adapter and says where its base is; bad combinations exit 2 naming the option', () => {
    const ok = lathe(['export', run.dir.path, '--format', 'peft', '--out', join(dir, 'cli-adapter')]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/exported the LoRA adapter of step 8 \(PEFT\) to .*cli-adapter/);
    expect(ok.stdout).toMatch(/base: load it on the Hugging Face folder it was trained from: .*hf-base/);
    const whole = lathe(['export', join(dir, 'base'), '--format', 'peft', '--out', join(dir, 'x')]);
    expect(whole.status).toBe(2);
    expect(whole.stderr).toMatch(/--format peft: .*base was trained without train\.lora .*use --format hf/);
    const merge = lathe(['export', run.dir.path, '--format', 'hf', '--merge', '--out', join(dir, 'y')]);
    expect(merge.status).toBe(2);
    expect(merge.stderr).toMatch(/--merge: only with --format peft/);
  }, 120_000);
});

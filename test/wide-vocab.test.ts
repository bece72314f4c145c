/**
 * Vocabularies past 65536 ids (Llama 3's 128k, Qwen's 151k): token files switch to uint32 ids, so
 * ids above 65535 reach training and held-out batches intact instead of wrapping.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BatchSampler, evalBatches } from '../src/data/batches.js';
import type { PreparedData } from '../src/data/prepare.js';
import { Recipe } from '../src/runs/recipe.js';
import { BYTE_TO_CHAR } from '../src/tokenizer/index.js';
import { scratch } from './helpers.js';

const BIG = 70_000;

describe('a tokenizer with more than 65536 ids', () => {
  it('writes uint32 token files that batches read back exactly, and trains', async () => {
    const dir = await scratch('lathe-wide-');
    // Byte tokens, fillers, and whole words past id 65535 (ignore_merges emits a word found whole in the vocab).
    const vocab: Record<string, number> = {};
    BYTE_TO_CHAR.forEach((ch, i) => (vocab[ch] = i));
    for (let i = 256; i < BIG - 2; i++) vocab[`f${i}`] = i;
    vocab['Ġzebra'] = BIG - 2;
    vocab['Ġyak'] = BIG - 1;
    const tok = {
      version: '1.0',
      added_tokens: [],
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: true,
        vocab,
        merges: [],
      },
    };
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok));
    const lines = Array.from({ length: 200 }, (_, i) => JSON.stringify({ text: `a zebra ${i} yak b zebra yak` }));
    await writeFile(join(dir, 'data.jsonl'), lines.join('\n') + '\n');
    const run = await new Recipe(
      {
        stage: 'pretrain',
        seed: 1,
        backend: 'cpu',
        data: { sources: [{ path: 'data.jsonl' }], valFraction: 0.1 },
        tokenizer: { path: 'tokenizer.json' },
        model: { dim: 16, layers: 1, heads: 2, context: 16 },
        train: { steps: 3, batchSize: 2, warmupSteps: 1, checkpointEvery: 0 },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'run') });
    expect(run.summary!.status, run.summary!.error).toBe('completed');
    const prepared = JSON.parse(await readFile(join(run.dir.dataDir, 'prepared.json'), 'utf8')) as PreparedData;
    expect(prepared.vocabSize).toBeGreaterThan(65536);
    expect(prepared.sources[0]!.tokenBytes).toBe(4);
    const train = new BatchSampler(prepared.sources, { seq: 16, batch: 4, seed: 1 }).next(1, 0);
    const held = evalBatches(prepared.sources, { seq: 16, batch: 2, count: 1 })[0]!;
    for (const ids of [train.inputs, held.inputs]) {
      expect(ids).toContain(BIG - 2);
      expect(ids).toContain(BIG - 1);
      expect(Math.max(...ids)).toBeLessThan(prepared.vocabSize);
    }
  }, 120_000);
});

import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, scratch } from './helpers.js';

const GB = 1024 ** 3;

/** Writes ~size bytes of varied paragraphs (seeded), returning the paragraph count. */
async function writeCorpus(path: string, size: number): Promise<number> {
  const words =
    'ledger swap coupon notional tenor basis spread yield carry hedge accrual strike vol gamma delta theta desk book trade'.split(
      ' ',
    );
  let x = 12345;
  const rnd = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 4294967296;
  const ws = createWriteStream(path);
  let written = 0;
  let paras = 0;
  while (written < size) {
    let p = `doc ${paras}:`;
    const n = 300 + Math.floor(rnd() * 500);
    for (let i = 0; i < n; i++)
      p += ` ${words[Math.floor(rnd() * words.length)]}${rnd() < 0.1 ? ` ${Math.floor(rnd() * 1e4)}` : ''}`;
    p += '\n\n';
    written += Buffer.byteLength(p);
    paras++;
    if (!ws.write(p)) await new Promise((r) => ws.once('drain', r));
  }
  await new Promise((r) => ws.end(r));
  return paras;
}

describe('streaming data pipeline', () => {
  it('tokenizes a generated 1 GB file in bounded memory', async () => {
    const dir = await scratch('lathe-1gb-');
    try {
      const file = join(dir, 'big.txt');
      const paras = await writeCorpus(file, GB);
      expect((await stat(file)).size).toBeGreaterThanOrEqual(GB);
      const recipe = {
        stage: 'pretrain',
        data: { sources: [{ path: file, split: 'paragraph' }], valFraction: 0.01, clean: { pii: { phone: false } } },
        tokenizer: { vocabSize: 512, maxBytes: 8 * 1024 * 1024 },
      };
      await writeFile(join(dir, 'r.json'), JSON.stringify(recipe));
      // A small heap: the pipeline must stream, not hold the file. Not spawnSync: a child that runs
      // past a minute would block this worker past vitest's RPC timeout.
      const res = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
        execFile(
          process.execPath,
          ['--max-old-space-size=384', join(ROOT, 'test', 'stream-1gb.mjs'), join(dir, 'r.json'), join(dir, 'prep')],
          { encoding: 'utf8', timeout: 1_500_000, maxBuffer: 64 << 20 },
          (err, stdout, stderr) =>
            resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
        ),
      );
      expect(res.status, res.stderr).toBe(0);
      const out = JSON.parse(res.stdout.trim().split('\n').at(-1)!);
      console.log(
        `1 GB streaming: ${out.seconds.toFixed(0)} s, peak RSS ${out.peakRssMb.toFixed(0)} MB, phases ${JSON.stringify(out.phases)}`,
      );
      expect(out.docs.train + out.docs.val).toBe(paras);
      expect(out.bytes).toBeGreaterThan(0.99 * GB);
      expect(out.tokens.train).toBeGreaterThan(out.bytes / 8);
      expect(out.peakRssMb).toBeLessThan(700);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 1_600_000);
});

// Child process for the 1 GB streaming test: prepares a recipe's data and reports peak memory.
// Usage: node test/stream-1gb.mjs <recipe.json> <out-dir>
import { readFileSync } from 'node:fs';
import { Recipe } from '../dist/src/runs/recipe.js';
import { prepareData } from '../dist/src/data/prepare.js';

const [recipePath, outDir] = process.argv.slice(2);
const r = new Recipe(JSON.parse(readFileSync(recipePath, 'utf8')), { baseDir: outDir });
const lock = await r.lock({ backend: 'cpu' });
const t0 = performance.now();
const prepared = await prepareData(lock, outDir);
const peak = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
process.stdout.write(
  JSON.stringify({
    seconds: (performance.now() - t0) / 1000,
    peakRssMb: peak ? Number(peak[1]) / 1024 : null,
    bytes: prepared.sources[0].bytes,
    docs: prepared.sources[0].docs,
    tokens: prepared.sources[0].tokens,
    phases: prepared.seconds,
  }) + '\n',
);

#!/usr/bin/env node
// Summarises a V8 .cpuprofile (from `node --cpu-prof`) by self time: the top functions, and the
// same grouped by where they live (wasm module, tfjs package, Lathe, node internals).
//   node --cpu-prof --cpu-prof-dir=/tmp/prof bench/train_step.mjs train --model small-dense --dir D --warmup 0 --steps 1 --micro 4
//   node bench/profile.mjs /tmp/prof/*.cpuprofile [--top 30]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { positionals, values: a } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '30' } },
});
if (!positionals[0]) {
  console.error('usage: node bench/profile.mjs FILE.cpuprofile [--top N]');
  process.exit(2);
}
const prof = JSON.parse(readFileSync(positionals[0], 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map();
// timeDeltas[i] is the time before samples[i]; attribute it to that sample's node.
for (let i = 0; i < prof.samples.length; i++)
  self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (prof.timeDeltas[i] ?? 0));
const total = [...self.values()].reduce((x, y) => x + y, 0);

const where = (url) => {
  if (!url) return '(native/vm)';
  if (url.startsWith('wasm://')) return 'wasm (tfjs-backend-wasm, XNNPACK)';
  const m = url.match(/node_modules\/(@tensorflow\/[^/]+|[^/@][^/]*)/);
  if (m) return m[1];
  if (url.includes('/dist/src/')) return 'lathe dist/src';
  if (url.includes('/bench/')) return 'bench';
  if (url.startsWith('node:')) return 'node internals';
  return url;
};
const fns = new Map();
const groups = new Map();
for (const [id, us] of self) {
  const n = byId.get(id);
  const cf = n.callFrame;
  const name = cf.functionName || '(anonymous)';
  const key = `${name}  ${cf.url ? `${cf.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(dist|bench)\//, '$1/')}:${cf.lineNumber + 1}` : ''}`;
  fns.set(key, (fns.get(key) ?? 0) + us);
  const g = where(cf.url);
  groups.set(g, (groups.get(g) ?? 0) + us);
}
const show = (m, top) =>
  [...m]
    .sort((x, y) => y[1] - x[1])
    .slice(0, top)
    .map(([k, us]) => `${(us / 1e6).toFixed(2).padStart(8)} s ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`)
    .join('\n');
console.log(
  `total sampled ${(total / 1e6).toFixed(1)} s\n\nby place:\n${show(groups, 12)}\n\ntop ${a.top} functions by self time:\n${show(fns, Number(a.top))}`,
);

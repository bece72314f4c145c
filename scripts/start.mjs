#!/usr/bin/env node
// `npm start`: trains the bundled example language (Tally) on this machine's CPU with a progress
// bar, then prints samples and whether each one parses in Tally's interpreter.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const lathe = join(root, 'bin', 'lathe.js');
const recipe = join(root, 'examples', 'recipes', 'tally-pretrain.json');
const out = join(root, 'runs', `quickstart-${new Date().toISOString().replace(/[:.]/g, '-')}`);
const extra = process.argv.slice(2);

console.log(`Training the Tally example (${recipe}) into ${out}\n`);
const train = spawnSync(process.execPath, [lathe, 'train', recipe, '--out', out, ...extra], { stdio: 'inherit', cwd: root });
if (train.status !== 0) process.exit(train.status ?? 1);

const { parses } = await import(join(root, 'dist', 'examples', 'tally', 'reward.js'));
console.log('\nSamples from the trained model:\n');
for (let seed = 1; seed <= 3; seed++) {
  const g = spawnSync(process.execPath, [lathe, 'generate', out, '--prompt', '', '--max-tokens', '120', '--temperature', '0.7', '--seed', String(seed)], { cwd: root, encoding: 'utf8' });
  if (g.status !== 0) {
    process.stderr.write(g.stderr);
    process.exit(g.status ?? 1);
  }
  const text = g.stdout.replace(/\n$/, '');
  console.log(`--- sample ${seed} (${parses(text) ? 'parses' : 'does not parse'} in the Tally interpreter)\n${text}\n`);
}
console.log(`Run directory: ${out}\nTry: node bin/lathe.js generate ${out} --prompt "let px = "`);

#!/usr/bin/env node
// Idempotent set-up for a fresh clone: node deps, build, Python venv with pinned packages.
// Uses only Node built-ins, since it runs before node_modules exists.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const quiet = process.argv.includes('--quiet');
const log = (m) => quiet || console.error(`[setup] ${m}`);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0) {
    console.error(`[setup] failed: ${cmd} ${args.join(' ')} (exit ${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

const sha = (file) => createHash('sha256').update(readFileSync(join(root, file))).digest('hex');
const stamp = (path) => (existsSync(path) ? readFileSync(path, 'utf8').trim() : '');

// 1. Node dependencies, reinstalled when the lockfile changes.
const lockSha = sha('package-lock.json');
const nodeStamp = join(root, 'node_modules', '.lathe-lock-sha');
if (stamp(nodeStamp) !== lockSha) {
  // `npm install` honours the lockfile; `npm ci` rejects it because npm leaves other platforms'
  // optional packages (rollup, esbuild) out of the lock here.
  log('installing node dependencies (npm install from package-lock.json)');
  run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error']);
  writeFileSync(nodeStamp, lockSha);
}

// 2. Build the library and CLI (incremental: a no-op when nothing changed).
log('building (tsc)');
run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json']);

// 3. The project's Python venv with pinned packages (HF tokenizers for compatibility tests).
const venv = join(root, '.venv');
const py = join(venv, 'bin', 'python');
const reqSha = sha('requirements.txt');
const venvStamp = join(venv, '.lathe-requirements-sha');
if (!existsSync(py) || stamp(venvStamp) !== reqSha) {
  log('creating .venv with the pinned Python packages');
  if (!existsSync(py)) run('python3', ['-m', 'venv', venv]);
  run(py, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', 'requirements.txt']);
  writeFileSync(venvStamp, reqSha);
}
if (!quiet && statSync(join(root, 'dist')).isDirectory()) log('ready');

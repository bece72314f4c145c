#!/usr/bin/env node
// Idempotent set-up for a fresh clone: node deps, build, Python venv with pinned packages.
// Uses only Node built-ins, since it runs before node_modules exists.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
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

// ---------------------------------------------------------------------------------------------
// 4. The Jupyter kernel `lathe` (kernel/, its own package): node deps from its lockfile, build,
//    and the kernel spec from jupyter-config/ into .venv/share/jupyter/kernels/lathe (never
//    outside the project).
{
  const kernelDir = join(root, 'kernel');
  const kernelLockSha = sha('kernel/package-lock.json');
  const kernelStamp = join(kernelDir, 'node_modules', '.lathe-lock-sha');
  if (stamp(kernelStamp) !== kernelLockSha) {
    log('installing the kernel\'s node dependencies (npm ci in kernel/)');
    // Install scripts stay off: zeromq ships a prebuilt binary that loads without its script.
    run('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error', '--ignore-scripts'], { cwd: kernelDir });
    run(process.execPath, ['-e', "import('zeromq').catch((e) => { console.error('zeromq does not load: ' + e.message); process.exit(1); })"], { cwd: kernelDir });
    writeFileSync(kernelStamp, kernelLockSha);
  }
  log('building the kernel (tsc -p kernel)');
  run(process.execPath, [join(kernelDir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(kernelDir, 'tsconfig.json')]);

  const specDir = join(venv, 'share', 'jupyter', 'kernels', 'lathe');
  const template = join(root, 'jupyter-config', 'kernels', 'lathe');
  const spec = readFileSync(join(template, 'kernel.json'), 'utf8')
    .replace('@NODE@', process.execPath)
    .replace('@KERNEL_MAIN@', join(kernelDir, 'dist', 'main.js'));
  mkdirSync(specDir, { recursive: true });
  const specFile = join(specDir, 'kernel.json');
  if (stamp(specFile) !== spec.trim()) {
    log(`installing the kernel spec lathe into ${specDir}`);
    writeFileSync(specFile, spec);
  }
  for (const f of readdirSync(template)) if (f !== 'kernel.json') copyFileSync(join(template, f), join(specDir, f));
}
if (!quiet && statSync(join(root, 'dist')).isDirectory()) log('ready');

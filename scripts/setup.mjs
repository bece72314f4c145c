#!/usr/bin/env node
// Idempotent set-up for a fresh clone: node deps, build, Python venv with pinned packages.
// Uses only Node built-ins, since it runs before node_modules exists.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
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

const sha = (file) =>
  createHash('sha256')
    .update(readFileSync(join(root, file)))
    .digest('hex');
const stamp = (path) => (existsSync(path) ? readFileSync(path, 'utf8').trim() : '');

/** `npm ci` in a sub-package, again only when its lockfile changes; install scripts stay off. */
function installLocked(dir, what) {
  const lock = join(dir, 'package-lock.json');
  const want = createHash('sha256').update(readFileSync(lock)).digest('hex');
  const have = join(dir, 'node_modules', '.lathe-lock-sha');
  if (stamp(have) === want) return;
  log(`installing the node dependencies of ${what} (npm ci in ${dir})`);
  run('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error', '--ignore-scripts'], {
    cwd: dir,
    env: { ...process.env, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: '1' },
  });
  writeFileSync(have, want);
}

/** One hash over files and folders (recursively), to rebuild only what changed. */
function treeSha(base, entries) {
  const h = createHash('sha256');
  const walk = (p) => {
    if (!existsSync(p)) return;
    if (statSync(p).isDirectory()) for (const f of readdirSync(p).sort()) walk(join(p, f));
    else h.update(p.slice(base.length)).update(readFileSync(p));
  };
  for (const e of entries) walk(join(base, e));
  return h.digest('hex');
}

/** The venv's Python version, e.g. "3.11" (site-packages lives under it). */
function pyVersion() {
  const r = spawnSync(
    join(root, '.venv', 'bin', 'python'),
    ['-c', 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")'],
    { encoding: 'utf8' },
  );
  return r.stdout.trim();
}

// 1. Node dependencies, reinstalled when the lockfile changes.
const lockSha = sha('package-lock.json');
const nodeStamp = join(root, 'node_modules', '.lathe-lock-sha');
if (stamp(nodeStamp) !== lockSha) {
  // `npm ci` never writes the lockfile, so set-up leaves the tree clean and, once installed, never
  // reaches the registry again. The committed lock lists every platform's optional packages.
  log('installing node dependencies (npm ci from package-lock.json)');
  // Install scripts stay off: onnxruntime-node carries its CPU library in the package, and its script
  // would only fetch CUDA add-ons from the network.
  run('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error', '--ignore-scripts'], {
    env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' },
  });
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

// The Jupyter server extension lathe_jupyter (read-only share links) lives in jupyter-config/; a .pth
// file makes it importable by every Python of the venv (npm start, tests), with nothing copied.
{
  const pth = join(venv, 'lib', `python${pyVersion()}`, 'site-packages', 'lathe_jupyter.pth');
  const want = join(root, 'jupyter-config');
  if (stamp(pth) !== want) writeFileSync(pth, `${want}\n`);
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
    log("installing the kernel's node dependencies (npm ci in kernel/)");
    // Install scripts stay off: zeromq ships a prebuilt binary that loads without its script.
    run('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error', '--ignore-scripts'], { cwd: kernelDir });
    run(
      process.execPath,
      [
        '-e',
        "import('zeromq').catch((e) => { console.error('zeromq does not load: ' + e.message); process.exit(1); })",
      ],
      { cwd: kernelDir },
    );
    writeFileSync(kernelStamp, kernelLockSha);
  }
  log('building the kernel (tsc -p kernel)');
  run(process.execPath, [
    join(kernelDir, 'node_modules', 'typescript', 'bin', 'tsc'),
    '-p',
    join(kernelDir, 'tsconfig.json'),
  ]);

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

// 5. The JupyterLab extension (extension/, its own package): node deps from its lockfile, tsc, the
//    prebuilt labextension (@jupyterlab/builder against the venv's JupyterLab), copied into
//    .venv/share/jupyter/labextensions. Rebuilt only when its sources change (webpack takes a minute).
{
  const extDir = join(root, 'extension');
  installLocked(extDir, 'the extension');
  // The extension also bundles a few library modules, value-imported from the build (the lathe.runs comm
  // types, the starter presets): their sources count as the extension's.
  const fromLibrary = new Set();
  const libraryImport = /^import (?!type\b)[^;]*?from '\.\.\/\.\.\/dist\/(src\/[\w/.-]+)\.js'/gm;
  for (const f of readdirSync(join(extDir, 'src')).filter((n) => n.endsWith('.ts') && !n.endsWith('.test.ts')))
    for (const m of readFileSync(join(extDir, 'src', f), 'utf8').matchAll(libraryImport)) fromLibrary.add(`${m[1]}.ts`);
  const srcSha =
    treeSha(extDir, ['src', 'style', 'package.json', 'tsconfig.json']) + treeSha(root, [...fromLibrary].sort());
  const out = join(extDir, 'labextension');
  const builtStamp = join(out, '.lathe-src-sha');
  if (stamp(builtStamp) !== srcSha) {
    log('building the JupyterLab extension (tsc, then @jupyterlab/builder)');
    run(process.execPath, [
      join(extDir, 'node_modules', 'typescript', 'bin', 'tsc'),
      '-p',
      join(extDir, 'tsconfig.json'),
    ]);
    const core = join(venv, 'lib', `python${pyVersion()}`, 'site-packages', 'jupyterlab', 'staging');
    run(
      process.execPath,
      [
        join(extDir, 'node_modules', '@jupyterlab', 'builder', 'lib', 'build-labextension.js'),
        '--core-path',
        core,
        extDir,
      ],
      { cwd: extDir, stdio: quiet ? 'ignore' : ['ignore', 'ignore', 'inherit'] },
    );
    writeFileSync(builtStamp, srcSha);
  }
  const installed = join(venv, 'share', 'jupyter', 'labextensions', 'lathe-jupyterlab');
  if (stamp(join(installed, '.lathe-src-sha')) !== srcSha) {
    log(`installing the labextension into ${installed}`);
    rmSync(installed, { recursive: true, force: true });
    cpSync(out, installed, { recursive: true });
  }
}

// 6. Browser tests and benchmarks only (`--browser`, implied by `--tests`): their node deps (galata,
//    Playwright; never a browser download) and Debian's Chromium, installed with apt when absent.
const forTests = process.argv.includes('--tests');
if (forTests || process.argv.includes('--browser')) {
  installLocked(join(root, 'extension', 'ui-tests'), 'the browser tests');
  if (!existsSync('/usr/bin/chromium')) {
    log("installing Debian's chromium (apt-get) for the browser tests");
    const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
    const apt = (args) =>
      run(sudo[0] ?? 'apt-get', [...(sudo.length ? ['apt-get'] : []), ...args], {
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      });
    apt(['update', '-qq']);
    apt(['install', '-y', '-qq', '--no-install-recommends', 'chromium']);
  }
}
// 7. Tests only (`--tests`): a real Slurm from Debian's packages (slurm-wlm, munge) for the Slurm
//    executor's test, which starts and stops its own one-node cluster.
if (forTests) {
  const { ensureSlurm } = await import('./slurm.mjs');
  const r = await ensureSlurm({ log });
  if (!r.ok) log(`Slurm is not available, the Slurm test will fail saying so: ${r.reason}`);
}
// 8. Tests only (`--tests`): llama-cpp-python, to load the GGUF exports with llama.cpp. It compiles
//    llama.cpp from its source package (cmake, minutes on two cores), so the wheel is built once into a
//    cache outside the clone (LATHE_CACHE_DIR, else $XDG_CACHE_HOME/lathe or ~/.cache/lathe), keyed
//    by everything that shapes it, and installed from there by every later set-up and fresh clone.
//    The build tools are pinned in requirements-build.txt and the build runs without pip's isolated
//    environment (so nothing unpinned is fetched). CPU only, no multimodal library, no -march=native
//    (a cached wheel must not depend on the machine that built it).
if (forTests) {
  const pins = readFileSync(join(root, 'requirements-build.txt'), 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
  const pin = pins.find((l) => l.startsWith('llama-cpp-python=='));
  if (!pin || pins.some((l) => !/^[\w.-]+==[\w.]+$/.test(l))) {
    console.error(
      '[setup] requirements-build.txt: every line must be <package>==<version>, llama-cpp-python among them',
    );
    process.exit(1);
  }
  const tools = pins.filter((l) => l !== pin);
  // -O1: the tests run tiny models, so compile time matters, not llama.cpp's speed (the build takes
  // about 290 CPU-seconds; -O3, the default, takes 1.6-1.9x as long on its largest files).
  const cmakeArgs =
    '-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF ' +
    '-DCMAKE_C_FLAGS_RELEASE=-O1 -DCMAKE_CXX_FLAGS_RELEASE=-O1';
  const key = createHash('sha256')
    .update([...pins, cmakeArgs, pyVersion(), process.platform, process.arch].join('\n'))
    .digest('hex')
    .slice(0, 16);
  const llamaStamp = join(venv, '.lathe-llama-cpp');
  if (stamp(llamaStamp) !== key) {
    const version = pin.split('==')[1];
    const cacheRoot =
      process.env.LATHE_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'lathe');
    const wheels = join(cacheRoot, 'wheels', `llama-cpp-python-${version}-${key}`);
    const cached = () =>
      existsSync(wheels)
        ? readdirSync(wheels).find((f) => f.startsWith(`llama_cpp_python-${version}-`) && f.endsWith('.whl'))
        : undefined;
    if (!cached()) {
      if (!['cc', 'c++'].every((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0)) {
        log("installing Debian's C/C++ compiler (apt-get g++) to build llama.cpp");
        const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
        const apt = (args) =>
          run(sudo[0] ?? 'apt-get', [...(sudo.length ? ['apt-get'] : []), ...args], {
            env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
          });
        apt(['update', '-qq']);
        apt(['install', '-y', '-qq', '--no-install-recommends', 'g++']);
      }
      log(`building ${pin} from its source package into ${wheels} (compiles llama.cpp once; minutes)`);
      const t0 = Date.now();
      run(py, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...tools]);
      const tmp = `${wheels}.tmp-${process.pid}`;
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp, { recursive: true });
      const pipBin = join(venv, 'bin');
      run(
        py,
        [
          '-m',
          'pip',
          'wheel',
          '--quiet',
          '--disable-pip-version-check',
          '--no-deps',
          '--no-build-isolation',
          // pip's own wheel cache would hand back a wheel built with other CMAKE_ARGS.
          '--no-cache-dir',
          '--no-binary',
          'llama-cpp-python',
          pin,
          '-w',
          tmp,
        ],
        {
          env: {
            ...process.env,
            // The pinned cmake and ninja of the venv come first.
            PATH: `${pipBin}:${process.env.PATH ?? ''}`,
            CMAKE_ARGS: cmakeArgs,
            CMAKE_BUILD_PARALLEL_LEVEL: String(Math.max(1, availableParallelism())),
          },
        },
      );
      // Renamed into place whole, so an interrupted build leaves no half cache behind.
      rmSync(wheels, { recursive: true, force: true });
      renameSync(tmp, wheels);
      log(`built ${cached()} in ${Math.round((Date.now() - t0) / 1000)} s`);
    }
    log(`installing ${cached()} from ${wheels}`);
    run(py, [
      '-m',
      'pip',
      'install',
      '--quiet',
      '--disable-pip-version-check',
      '--no-deps',
      '--force-reinstall',
      join(wheels, cached()),
    ]);
    writeFileSync(llamaStamp, key);
  }
}
// 9. Tests only (`--tests`): Mesa's lavapipe, a CPU Vulkan driver with shader-f16, for the webgpu
//    f16-storage test (scripts/lavapipe.mjs). Without it that test skips, saying why.
if (forTests) {
  const { ensureLavapipe } = await import('./lavapipe.mjs');
  const r = ensureLavapipe({ log });
  if (!r.ok) log(`lavapipe is not available, the shader-f16 test will skip saying so: ${r.reason}`);
}
if (!quiet && statSync(join(root, 'dist')).isDirectory()) log('ready');

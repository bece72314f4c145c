#!/usr/bin/env node
// `npm start [-- <jupyter lab args>]`: the workbench. Set-up has run (scripts/setup.mjs) before this;
// here JupyterLab starts on the repository with notebooks/quickstart.ipynb open, the `lathe` kernel,
// the Lathe extension, and prints the URL with its token. Arguments after `--` go to `jupyter lab`.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2).filter((a) => a !== '--');
const has = (name) => args.some((a) => a === name || a.startsWith(`${name}=`));

// Jupyter masks a token it was given, so choose one here (unless the user did) and print it ourselves.
const tokenArg = args.find((a) => a.startsWith('--IdentityProvider.token=') || a.startsWith('--ServerApp.token='));
const token = tokenArg ? tokenArg.slice(tokenArg.indexOf('=') + 1) : randomBytes(24).toString('hex');
const lab = [
  `--config=${join(root, 'jupyter-config', 'jupyter_server_config.json')}`,
  ...(has('--ServerApp.root_dir') || has('--notebook-dir') ? [] : [`--ServerApp.root_dir=${root}`]),
  ...(tokenArg ? [] : [`--IdentityProvider.token=${token}`]),
  ...(process.getuid?.() === 0 && !has('--allow-root') ? ['--allow-root'] : []),
  ...args,
];

const env = {
  ...process.env,
  // Kernel spec and labextension live in the project venv; nothing outside the project is read for them.
  JUPYTER_PATH: [join(root, '.venv', 'share', 'jupyter'), process.env.JUPYTER_PATH].filter(Boolean).join(':'),
  PATH: `${join(root, '.venv', 'bin')}:${process.env.PATH}`,
  // The server extension lathe_jupyter (read-only share links) lives in jupyter-config/.
  PYTHONPATH: [join(root, 'jupyter-config'), process.env.PYTHONPATH].filter(Boolean).join(':'),
  // Kernels publish every run into its room; the room server starts behind Jupyter's proxy on demand.
  LATHE_ROOMS_URL: process.env.LATHE_ROOMS_URL ?? 'auto',
};
const child = spawn(join(root, '.venv', 'bin', 'jupyter'), ['lab', ...lab], {
  cwd: root,
  env,
  stdio: ['inherit', 'inherit', 'pipe'],
});

let announced = false;
child.stderr.on('data', (chunk) => {
  process.stderr.write(chunk);
  if (announced) return;
  const m = /(https?:\/\/(?:127\.0\.0\.1|localhost|[\w.-]+):(\d+)\/[^\s?]*)/.exec(chunk.toString());
  if (m && /is running at|127\.0\.0\.1:\d+/.test(chunk.toString())) {
    announced = true;
    const url = m[1].replace('localhost', '127.0.0.1');
    const q = token ? `?token=${token}` : '';
    console.log(`\nLathe workbench: ${url}${q}\n`);
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));

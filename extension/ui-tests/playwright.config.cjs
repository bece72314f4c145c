// Browser tests against a real JupyterLab started through `npm start` (scripts/start.mjs), with Debian's
// Chromium; Playwright never downloads a browser here.
const { join } = require('node:path');
const base = require('@jupyterlab/galata/lib/playwright-config');

const port = Number(process.env.LATHE_UI_PORT ?? 8899);
const repo = join(__dirname, '..', '..');
const pyLib = require('node:fs').readdirSync(join(repo, '.venv', 'lib')).find((d) => d.startsWith('python'));
const galataHelpers = join(repo, '.venv', 'lib', pyLib, 'site-packages', 'jupyterlab', 'galata');
const labArgs = [
  '--no-browser',
  `--port=${port}`,
  '--ServerApp.port_retries=0',
  '--IdentityProvider.token=',
  '--ServerApp.password=',
  '--ServerApp.disable_check_xsrf=True',
  '--LabApp.expose_app_in_browser=True',
  `--LabServerApp.extra_labextensions_path=${galataHelpers}`,
  `--ServerApp.root_dir=${join(__dirname, '.root')}`,
];

module.exports = {
  ...base,
  testDir: 'tests',
  timeout: 300_000,
  expect: { timeout: 60_000 },
  workers: 1,
  retries: 0,
  reporter: [['list'], ['html', { open: 'never', outputFolder: 'playwright-report' }]],
  outputDir: 'test-results',
  use: {
    ...base.use,
    baseURL: `http://127.0.0.1:${port}`,
    launchOptions: { executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] },
    video: 'off',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
  },
  webServer: {
    command: `node prepare-root.mjs && node ${join(repo, 'scripts', 'start.mjs')} -- ${labArgs.join(' ')}`,
    url: `http://127.0.0.1:${port}/api/status`,
    reuseExistingServer: false,
    timeout: 300_000,
    // Short training runs in the tests; the cancel test asks for its own long run explicitly.
    // Its own run-room data dir, so the tests never touch a workbench started from this clone.
    env: { ...process.env, LATHE_STEPS: '40', LATHE_ROOMS_DIR: join(__dirname, '.rooms') },
    stdout: 'ignore',
    stderr: 'pipe',
  },
};

// Collaboration in real browsers: two or three Chromium contexts on one JupyterLab (jupyter-collaboration
// for the notebook, Lathe's run rooms for the charts).
import { expect, test } from '@jupyterlab/galata';
import type { Browser, Page } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join as joinPath } from 'node:path';

test.describe.configure({ mode: 'serial' });

const notebook = (source: string) =>
  JSON.stringify({
    cells: [
      { cell_type: 'code', id: 'train', metadata: {}, outputs: [], execution_count: null, source },
      { cell_type: 'markdown', id: 'notes', metadata: {}, source: 'notes' },
    ],
    metadata: { kernelspec: { name: 'lathe', display_name: 'Lathe (TypeScript)', language: 'typescript' } },
    nbformat: 4,
    nbformat_minor: 5,
  });

/** A second (or third) person: a fresh browser context on the same notebook. */
async function join(browser: Browser, baseURL: string, path: string): Promise<Page> {
  const ctx = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = await ctx.newPage();
  await page.goto(`${baseURL}/lab/workspaces/${Math.random().toString(36).slice(2)}/tree/${path}`);
  await page.waitForFunction(() => !!(window as any).jupyterapp?.shell.currentWidget?.context?.path, null, {
    timeout: 120_000,
  });
  await expect(page.locator('.jp-NotebookPanel .jp-Cell').first()).toBeVisible({ timeout: 60_000 });
  return page;
}

async function open(page: Page, path: string): Promise<void> {
  await page.evaluate((p) => void (window as any).jupyterapp.commands.execute('docmanager:open', { path: p }), path);
  await page.waitForFunction(
    () => (window as any).jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle',
    null,
    { timeout: 120_000 },
  );
}

async function chart(page: Page): Promise<{ points: number; roomPoints: number; status: string; watchers: string }> {
  return page.evaluate(() => {
    const c = document.querySelector(
      '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea .lathe-RunChart',
    ) as HTMLElement | null;
    return {
      points: Number(c?.dataset.points ?? 0),
      roomPoints: Number(c?.dataset.roomPoints ?? 0),
      status: c?.dataset.status ?? '',
      watchers: c?.dataset.watchers ?? '',
    };
  });
}

test('an edit in A appears in B within 1 s, and a run started in A charts live in B and in a late joiner C', async ({
  page,
  browser,
  baseURL,
  tmpPath,
}) => {
  const path = `${tmpPath}/shared.ipynb`;
  await page.contents.uploadContent(
    notebook(
      "import { recipe } from 'lathe';\nconst r = await recipe.load('../examples/recipes/tally-pretrain.json');\nconst run = await r.run({ steps: 60 });\nrun.status",
    ),
    'text',
    path,
  );
  await open(page, path);
  const b = await join(browser, baseURL!, path);

  // Edit propagation: A types a comment at the end of the code cell; B's editor shows it.
  const marker = `edited${Date.now()}`;
  await page.locator('.jp-Cell').first().locator('.cm-content').click();
  await page.keyboard.press('Control+End');
  await page.keyboard.press('Enter');
  await page.keyboard.type(`// ${marker}`);
  const typed = Date.now();
  await expect(b.locator('.jp-Cell').first().locator('.cm-content')).toContainText(marker, { timeout: 1000 });
  const editMs = Date.now() - typed;
  console.log(`edit A → B: ${editMs} ms after the last keystroke`);
  await page.keyboard.press('Escape');

  // A runs the training cell; B sees the chart grow while it trains.
  await page.evaluate(() => {
    const app = (window as any).jupyterapp;
    app.shell.currentWidget.content.activeCellIndex = 0;
    void app.commands.execute('notebook:run-cell');
  });
  await expect.poll(async () => (await chart(b)).points, { timeout: 180_000, intervals: [200] }).toBeGreaterThan(0);
  const seen = (await chart(b)).points;
  expect(seen).toBeLessThan(60);
  await expect.poll(async () => (await chart(b)).points, { timeout: 120_000, intervals: [200] }).toBeGreaterThan(seen);
  expect((await chart(b)).status).toBe('running');
  // Both are in the run's room.
  await expect
    .poll(async () => (await chart(b)).watchers.split(',').filter(Boolean).length, { timeout: 30_000 })
    .toBeGreaterThanOrEqual(2);

  // C joins late (mid-run or after): the whole curve, from the room.
  const c = await join(browser, baseURL!, path);
  await expect.poll(async () => (await chart(c)).status, { timeout: 240_000 }).toBe('completed');
  const final = await chart(c);
  expect(final.points).toBe(60);
  expect(final.roomPoints).toBe(60);
  await b.screenshot({ path: test.info().outputPath('collab-b.png') });
  await b.context().close();
  await c.context().close();
});

test('killing the room server mid-run leaves every collaborator a complete curve without duplicates', async ({
  page,
  browser,
  baseURL,
  tmpPath,
}) => {
  const path = `${tmpPath}/kill.ipynb`;
  await page.contents.uploadContent(
    notebook(
      "import { recipe } from 'lathe';\nconst r = await recipe.load('../examples/recipes/tally-pretrain.json');\nconst run = await r.run({ steps: 60 });\nrun.status",
    ),
    'text',
    path,
  );
  await open(page, path);
  const b = await join(browser, baseURL!, path);
  await page.evaluate(() => {
    const app = (window as any).jupyterapp;
    app.shell.currentWidget.content.activeCellIndex = 0;
    void app.commands.execute('notebook:run-cell');
  });
  await expect.poll(async () => (await chart(b)).roomPoints, { timeout: 180_000, intervals: [200] }).toBeGreaterThan(5);
  // kill -9 the room server (jupyter-server-proxy starts it again on the next connection).
  const { pid } = JSON.parse(readFileSync(joinPath(__dirname, '..', '.rooms', 'server.json'), 'utf8')) as {
    pid: number;
  };
  process.kill(pid, 'SIGKILL');
  const killedAt = (await chart(b)).roomPoints;
  expect(killedAt).toBeLessThan(60);
  await expect.poll(async () => (await chart(b)).status, { timeout: 240_000 }).toBe('completed');
  // The room catches up after the restart: every step exactly once.
  await expect.poll(async () => (await chart(b)).roomPoints, { timeout: 60_000 }).toBe(60);
  const steps = await b.evaluate(() => {
    const c = document.querySelector(
      '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea .lathe-RunChart',
    ) as HTMLElement;
    return Number(c.dataset.points);
  });
  expect(steps).toBe(60);
  await b.context().close();
});

test('a wrong room token is refused', async ({ page, baseURL }) => {
  const result = await page.evaluate(async (base) => {
    const url = base!.replace(/^http/, 'ws') + '/lathe-rooms/run%3Anope?room_token=lr1.bad.token';
    return new Promise<{ refused: boolean; bytes: number }>((resolve) => {
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      let bytes = 0;
      ws.onmessage = (e) => {
        const d = new Uint8Array(e.data as ArrayBuffer);
        bytes += d.length;
        // y-protocols auth frame: message type 2, then permission-denied (0) and the reason.
        if (d[0] === 2 && d[1] === 0) resolve({ refused: true, bytes });
      };
      ws.onclose = () => resolve({ refused: false, bytes });
      setTimeout(() => resolve({ refused: false, bytes }), 15_000);
    });
  }, baseURL);
  expect(result.refused).toBe(true);
});

test('a read-only share link shows the notebook and its chart but cannot execute; a wrong link is refused', async ({
  page,
  browser,
  baseURL,
  tmpPath,
}) => {
  const path = `${tmpPath}/shared-view.ipynb`;
  const metrics = Array.from({ length: 12 }, (_, i) => ({
    step: i + 1,
    stage: 'pretrain',
    loss: 6 - i * 0.2,
    lr: 1e-3,
  }));
  const nb = {
    cells: [
      {
        cell_type: 'code',
        id: 'train',
        metadata: {},
        execution_count: 1,
        source: 'const run = await r.run();',
        outputs: [
          {
            output_type: 'display_data',
            metadata: {},
            data: {
              'application/vnd.lathe.run+json': {
                version: 1,
                id: 'shared-run',
                name: 'shared-run',
                stage: 'pretrain',
                status: 'completed',
                step: 12,
                steps: 12,
                metrics,
              },
              'text/plain': 'shared-run',
            },
          },
        ],
      },
    ],
    metadata: { kernelspec: { name: 'lathe', display_name: 'Lathe (TypeScript)', language: 'typescript' } },
    nbformat: 4,
    nbformat_minor: 5,
  };
  await page.contents.uploadContent(JSON.stringify(nb), 'text', path);
  const repo = joinPath(__dirname, '..', '..', '..');
  const out = execFileSync(
    process.execPath,
    [
      joinPath(repo, 'bin', 'lathe.js'),
      'rooms',
      'share',
      path,
      '--ttl',
      '10m',
      '--name',
      'Vic',
      '--base-url',
      `${baseURL}/`,
      '--data-dir',
      joinPath(__dirname, '..', '.rooms'),
      '--json',
    ],
    { encoding: 'utf8' },
  );
  const link = JSON.parse(out) as { url: string; token: string };

  const viewer = await (await browser.newContext()).newPage();
  await viewer.goto(link.url);
  await viewer.waitForFunction(() => document.body.dataset.latheRole === 'viewer', null, { timeout: 120_000 });
  await expect(viewer.locator('.jp-OutputArea .lathe-RunChart').first()).toBeVisible({ timeout: 60_000 });
  await expect(viewer.locator('.jp-OutputArea .lathe-RunChart').first()).toHaveAttribute('data-points', '12');
  // Try to execute: no kernel may start, the server refuses kernels and sessions for viewers.
  await viewer.evaluate(() => void (window as any).jupyterapp.commands.execute('notebook:run-all-cells'));
  await viewer.waitForTimeout(3000);
  expect(
    await viewer.evaluate(() => !!(window as any).jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel),
  ).toBe(false);
  const started = await viewer.evaluate(
    async () =>
      (
        await fetch('/api/sessions', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ path: 'x.ipynb', type: 'notebook', name: 'x', kernel: { name: 'lathe' } }),
        })
      ).status,
  );
  expect(started).toBe(403);
  await expect(viewer.locator('.jp-InputPrompt').first()).toContainText('1');
  await viewer.screenshot({ path: test.info().outputPath('viewer.png') });
  await viewer.context().close();

  // A tampered link is refused.
  const bad = await (await browser.newContext()).newPage();
  const res = await bad.goto(link.url.replace(/lathe_share=[^&]+/, `lathe_share=${link.token.slice(0, -4)}AAAA`));
  expect(res?.status()).toBe(403);
  await bad.context().close();
});

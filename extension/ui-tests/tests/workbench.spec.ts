// The workbench in a real browser: the quickstart trains with a live chart, the Runs panel lists and
// cancels runs, charts come back from saved outputs, and the launcher's recipe templates work.
import { expect, galata, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const repo = join(__dirname, '..', '..', '..');
const artifacts = join(__dirname, '..', 'artifacts');
mkdirSync(artifacts, { recursive: true });

async function shot(page: Page, name: string, testInfo: { outputPath(n: string): string }): Promise<string> {
  const path = testInfo.outputPath(`${name}.png`);
  await page.screenshot({ path, fullPage: false });
  copyFileSync(path, join(artifacts, `${name}.png`));
  return path;
}

/** Points and status of the first Lathe run chart on the page (from its data attributes). */
async function chartState(page: Page): Promise<{ points: number; status: string }> {
  const chart = page.locator('.jp-OutputArea .lathe-RunChart').first();
  if (!(await chart.count())) return { points: 0, status: '' };
  return {
    points: Number((await chart.getAttribute('data-points')) ?? 0),
    status: (await chart.getAttribute('data-status')) ?? '',
  };
}

/** Starts "Run All" without waiting for it (the command's promise resolves when every cell is done). */
function runAll(page: Page): Promise<unknown> {
  return page.evaluate(() => {
    void (window as any).jupyterapp.commands.execute('notebook:run-all-cells');
  });
}

test.describe.configure({ mode: 'serial' });
// Render every cell (no virtual scrolling), so outputs below the fold are in the DOM to check.
test.use({
  mockSettings: {
    ...galata.DEFAULT_SETTINGS,
    '@jupyterlab/notebook-extension:tracker': {
      ...galata.DEFAULT_SETTINGS['@jupyterlab/notebook-extension:tracker'],
      windowingMode: 'none',
    },
  },
});

/** Opens a notebook by path through the document manager (works whichever sidebar tab is open). */
async function open(page: Page, path: string, waitForKernel = true): Promise<void> {
  await page.evaluate((p) => {
    void (window as any).jupyterapp.commands.execute('docmanager:open', { path: p });
  }, path);
  await expect(page.locator('.jp-NotebookPanel').first()).toBeVisible();
  // Running cells before the session has its kernel makes JupyterLab ask which kernel to start.
  if (waitForKernel) await kernelIdle(page);
}

async function kernelIdle(page: Page): Promise<void> {
  await page.waitForFunction(
    () => (window as any).jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle',
    null,
    { timeout: 120_000 },
  );
}

/** Waits until no cell is queued or running (no `[*]` prompt). */
async function idle(page: Page): Promise<void> {
  await expect(page.locator('.jp-InputArea-prompt', { hasText: '*' })).toHaveCount(0, { timeout: 240_000 });
}

async function showChart(page: Page): Promise<void> {
  await page.locator('.jp-OutputArea .lathe-RunChart').first().scrollIntoViewIfNeeded();
}

test('quickstart: run all trains with a live chart that grows, the Runs panel lists the run, the chart survives a reload', async ({
  page,
  tmpPath,
}, testInfo) => {
  await page.contents.uploadFile(join(repo, 'notebooks', 'quickstart.ipynb'), `${tmpPath}/quickstart.ipynb`);
  await open(page, `${tmpPath}/quickstart.ipynb`);
  // The recipe card comes from Lathe's renderer, not the HTML fallback.
  await runAll(page);
  await expect(page.locator('.lathe-RecipeCard').first()).toBeVisible({ timeout: 120_000 });
  await expect(page.locator('.lathe-RecipeCard details summary', { hasText: 'data' }).first()).toBeVisible();

  // Live: the chart shows points while the run is still training, and then more of them.
  await expect
    .poll(async () => (await chartState(page)).points, { timeout: 180_000, intervals: [200] })
    .toBeGreaterThanOrEqual(3);
  const early = await chartState(page);
  expect(early.status).toBe('running');
  await showChart(page);
  await shot(page, 'quickstart-training', testInfo);
  await expect
    .poll(async () => (await chartState(page)).points, { timeout: 120_000, intervals: [200] })
    .toBeGreaterThan(early.points);

  // The Runs panel lists it (live, from the kernel's lathe.runs comm).
  await page.sidebar.openTab('lathe-runs');
  const row = page.locator('.lathe-RunsPanel-row').first();
  await expect(row).toBeVisible();
  await expect(row).toContainText('tally-pretrain');

  // The run completes (LATHE_STEPS=40): every step is on the chart.
  await expect.poll(async () => (await chartState(page)).status, { timeout: 240_000 }).toBe('completed');
  expect((await chartState(page)).points).toBeGreaterThanOrEqual(40);
  await expect(page.locator('.lathe-RunsPanel-row', { hasText: 'tally-pretrain' }).first()).toHaveAttribute(
    'data-status',
    'completed',
    { timeout: 30_000 },
  );
  await idle(page);
  await showChart(page);
  await shot(page, 'quickstart-done', testInfo);

  // Saved outputs, no kernel, fresh page: the chart renders again with every point.
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('docmanager:save'));
  await page.kernel.shutdownAll();
  await page.reload({ waitForIsReady: false });
  await page.waitForFunction(() => !!(window as any).jupyterapp?.commands.hasCommand('docmanager:open'));
  await open(page, `${tmpPath}/quickstart.ipynb`, false);
  await expect(page.locator('.jp-OutputArea .lathe-RunChart').first()).toBeVisible({ timeout: 60_000 });
  expect((await chartState(page)).points).toBeGreaterThanOrEqual(40);
  await expect(page.locator('.jp-OutputArea .lathe-RunChart .main-svg').first()).toBeVisible();
  await showChart(page);
  await shot(page, 'quickstart-reopened', testInfo);
});

test('cancel from the Runs panel stops a long run at a step boundary', async ({ page, tmpPath }, testInfo) => {
  const nb = {
    cells: [
      {
        cell_type: 'code',
        id: 'c0',
        metadata: {},
        outputs: [],
        execution_count: null,
        source:
          "import { recipe } from 'lathe';\nconst r = await recipe.load('../examples/recipes/tally-pretrain.json');\nconst run = await r.run({ steps: 5000 });\nrun.status",
      },
    ],
    metadata: { kernelspec: { name: 'lathe', display_name: 'Lathe (TypeScript)', language: 'typescript' } },
    nbformat: 4,
    nbformat_minor: 5,
  };
  await page.contents.uploadContent(JSON.stringify(nb), 'text', `${tmpPath}/long.ipynb`);
  await open(page, `${tmpPath}/long.ipynb`);
  await runAll(page);
  await expect
    .poll(async () => (await chartState(page)).points, { timeout: 180_000, intervals: [200] })
    .toBeGreaterThanOrEqual(5);

  await page.sidebar.openTab('lathe-runs');
  const row = page.locator('.lathe-RunsPanel-row[data-status="running"]').first();
  await expect(row).toBeVisible();
  await row.locator('input[type=checkbox]').check();
  await page.locator('.lathe-RunsPanel-cancel').click();

  await expect.poll(async () => (await chartState(page)).status, { timeout: 60_000 }).toBe('cancelled');
  const { points } = await chartState(page);
  expect(points).toBeLessThan(5000);
  await idle(page);
  await expect(page.locator('.jp-OutputArea-output').last()).toContainText('cancelled');
  await showChart(page);
  await shot(page, 'cancelled', testInfo);
});

test('launcher: a recipe notebook from the template renders its recipe card', async ({ page }, testInfo) => {
  await page.evaluate(() => {
    void (window as any).jupyterapp.commands.execute('lathe:new-recipe', { stage: 'sft' });
  });
  // Three dialogs: data path, base model (empty: fresh model), accept the defaults.
  for (let i = 0; i < 2; i++) {
    await page.locator('.jp-Dialog .jp-mod-accept').click();
  }
  await expect(page.locator('.jp-NotebookPanel .jp-Cell').nth(2)).toContainText('recipe.sft(');
  await kernelIdle(page);
  // Run the cells above the training cell: the import and the recipe.
  await page.locator('.jp-NotebookPanel .jp-Cell').nth(3).click();
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('notebook:run-all-above'));
  await expect(page.locator('.lathe-RecipeCard').first()).toBeVisible();
  await expect(page.locator('.lathe-RecipeCard-stage').first()).toHaveText('sft');
  await shot(page, 'recipe-template', testInfo);
});

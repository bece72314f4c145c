import { ILayoutRestorer, type JupyterFrontEnd, type JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker } from '@jupyterlab/notebook';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { setIdentity } from './room';
import { RunsPanel } from './runs-panel';
import {
  blankNotebook,
  DATA_HINTS,
  DEFAULT_DATA,
  DEFAULT_REWARD,
  OPEN_MODEL_STAGES,
  openModelLabel,
  recipeNotebook,
  STAGE_LABELS,
  STAGES,
  type Stage,
} from './templates';

const CATEGORY = 'Lathe';

/** The "Runs" side panel. */
const runsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'lathe-jupyterlab:runs',
  description: 'Lists runs in the workspace and in kernels; opens, compares and cancels them.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null, palette: ICommandPalette | null) => {
    // Presence in run rooms uses JupyterLab's own identity (name and colour).
    void app.serviceManager.user.ready.then(() => {
      const id = app.serviceManager.user.identity;
      if (id) setIdentity({ name: id.display_name || id.name || id.username, color: id.color || '#888888' });
    });
    // Starts the run-room server behind Jupyter's proxy now, so the first run's room is ready.
    void fetch(URLExt.join(PageConfig.getBaseUrl(), 'lathe-rooms', 'healthz'), { credentials: 'same-origin' }).catch(
      () => undefined,
    );
    const panel = new RunsPanel(app);
    app.shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, panel.id);
    app.commands.addCommand('lathe:show-runs', {
      label: 'Show Lathe Runs',
      execute: () => app.shell.activateById(panel.id),
    });
    palette?.addItem({ command: 'lathe:show-runs', category: CATEGORY });
  },
};

async function createNotebook(
  app: JupyterFrontEnd,
  dir: string,
  stem: string,
  content: Record<string, unknown>,
): Promise<void> {
  const contents = app.serviceManager.contents;
  // The first of stem.ipynb, stem-1.ipynb, ... that does not exist yet.
  let path = '';
  for (let i = 0; !path; i++) {
    const candidate = `${dir ? dir + '/' : ''}${stem}${i ? '-' + i : ''}.ipynb`;
    const taken = await contents.get(candidate, { content: false }).then(
      () => true,
      () => false,
    );
    if (!taken) path = candidate;
  }
  await contents.save(path, { type: 'notebook', format: 'json', content });
  await app.commands.execute('docmanager:open', { path, factory: 'Notebook', kernel: { name: 'lathe' } });
}

/** Launcher and palette entries: a blank Lathe notebook, and a recipe notebook per stage. */
const launcherPlugin: JupyterFrontEndPlugin<void> = {
  id: 'lathe-jupyterlab:launcher',
  description:
    'New Lathe notebook; new recipe from template (pretrain, SFT, DPO, online DPO, GRPO), and from an open model (LoRA).',
  autoStart: true,
  optional: [ILauncher, ICommandPalette, IDefaultFileBrowser],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    browser: IDefaultFileBrowser | null,
  ) => {
    const cwd = () => browser?.model.path ?? '';
    app.commands.addCommand('lathe:new-notebook', {
      label: (args) => (args.isPalette ? 'New Lathe notebook' : 'Lathe notebook'),
      caption: 'A notebook on the Lathe (TypeScript) kernel',
      execute: () => createNotebook(app, cwd(), 'lathe', blankNotebook()),
    });
    app.commands.addCommand('lathe:new-recipe', {
      label: (args) =>
        args.stage
          ? args.open
            ? openModelLabel(args.stage as Stage)
            : `${STAGE_LABELS[args.stage as Stage]} recipe`
          : 'New recipe from template…',
      caption: 'A notebook with a starter recipe for your data',
      execute: async (args) => {
        let stage = args.stage as Stage | undefined;
        if (!stage) {
          const pick = await InputDialog.getItem({
            title: 'New recipe from template',
            items: STAGES.map((s) => STAGE_LABELS[s]),
          });
          if (!pick.button.accept || !pick.value) return;
          stage = STAGES.find((s) => STAGE_LABELS[s] === pick.value)!;
        }
        const data = await InputDialog.getText({
          title: `Data for ${STAGE_LABELS[stage]}: ${DATA_HINTS[stage]} (paths from the workspace root, comma-separated)`,
          text: (args.data as string) ?? DEFAULT_DATA[stage],
        });
        if (!data.button.accept || !data.value) return;
        let from: string | undefined;
        let reward: string | undefined;
        const open = Boolean(args.open);
        if (open) {
          const f = await InputDialog.getText({
            title:
              'The open model: a Hugging Face folder (config.json, model.safetensors, tokenizer.json) or a run directory',
            text: (args.from as string) ?? '',
          });
          if (!f.button.accept || !f.value?.trim()) return;
          from = f.value.trim();
        } else if (stage !== 'pretrain') {
          const f = await InputDialog.getText({
            title: 'Base model: a run directory or a Hugging Face folder (empty: train a fresh small model)',
            text: (args.from as string) ?? '',
          });
          if (!f.button.accept) return;
          from = f.value?.trim() || undefined;
        }
        if (stage === 'grpo' || stage === 'online-dpo') {
          const r = await InputDialog.getText({
            title: 'Reward function module (file#export), (completion, example) => number',
            text: (args.reward as string) ?? DEFAULT_REWARD,
          });
          if (!r.button.accept || !r.value) return;
          reward = r.value.trim();
        }
        const paths = data.value
          .split(',')
          .map((p) => p.trim())
          .filter(Boolean);
        await createNotebook(
          app,
          cwd(),
          open ? `${stage}-open-model` : `${stage}-recipe`,
          recipeNotebook({ stage, data: paths, notebookDir: cwd(), from, reward, lora: open }),
        );
      },
    });
    palette?.addItem({ command: 'lathe:new-notebook', category: CATEGORY, args: { isPalette: true } });
    palette?.addItem({ command: 'lathe:new-recipe', category: CATEGORY });
    if (launcher) {
      launcher.add({ command: 'lathe:new-notebook', category: CATEGORY, rank: 0 });
      STAGES.forEach((stage, i) =>
        launcher.add({ command: 'lathe:new-recipe', category: CATEGORY, rank: i + 1, args: { stage } }),
      );
      // "From an open model": LoRA on a Hugging Face folder, exported for PEFT.
      OPEN_MODEL_STAGES.forEach((stage, i) =>
        launcher.add({
          command: 'lathe:new-recipe',
          category: CATEGORY,
          rank: STAGES.length + i + 1,
          args: { stage, open: true },
        }),
      );
    }
  },
};

/**
 * Read-only share links: a viewer (identity.lathe_role === 'viewer', set by the lathe_jupyter server
 * extension) never starts a kernel and cannot edit; the server refuses both anyway, this keeps the UI
 * honest (no "Error starting kernel" dialog, no local edits that would silently drift).
 */
const viewerPlugin: JupyterFrontEndPlugin<void> = {
  id: 'lathe-jupyterlab:viewer',
  description: 'Read-only notebooks and no kernels for share-link viewers.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    void app.serviceManager.user.ready.then(() => {
      const identity = app.serviceManager.user.identity as { lathe_role?: string } | null;
      if (identity?.lathe_role !== 'viewer') return;
      document.body.dataset.latheRole = 'viewer';
      const lock = (panel: NonNullable<typeof tracker.currentWidget>) => {
        panel.sessionContext.kernelPreference = { shouldStart: false, canStart: false, autoStartDefault: false };
        void panel.context.ready.then(() => {
          for (const cell of panel.content.widgets) cell.readOnly = true;
          panel.content.model?.cells.changed.connect(() => panel.content.widgets.forEach((c) => (c.readOnly = true)));
        });
        panel.title.label = `${panel.context.localPath.split('/').pop()} (view only)`;
      };
      tracker.forEach(lock);
      tracker.widgetAdded.connect((_, panel) => lock(panel));
    });
  },
};

export default [runsPlugin, launcherPlugin, viewerPlugin];

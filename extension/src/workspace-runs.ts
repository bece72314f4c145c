// The workspace scanner of the Runs panel: run directories in the workspace's run folders, read
// through Jupyter's contents API, as rows.
import type { Contents } from '@jupyterlab/services';
import { parseMetrics } from './chart';
import { rowFromDir, type RunRow } from './runs-model';

/** Folders scanned for run directories, relative to the server root, besides each open notebook's `runs/`. */
export const RUN_FOLDERS = ['runs', 'notebooks/runs'];

/** What the scanner needs of Jupyter's contents manager. */
export type WorkspaceFiles = Pick<Contents.IManager, 'get'>;

/** A file's text, or '' when it cannot be read. */
export async function readText(files: WorkspaceFiles, path: string): Promise<string> {
  try {
    const m = await files.get(path, { content: true, format: 'text', type: 'file' });
    return m.content as string;
  } catch {
    return '';
  }
}

async function readJson(files: WorkspaceFiles, path: string): Promise<Record<string, unknown> | null> {
  try {
    const m = await files.get(path, { content: true, format: 'text', type: 'file' });
    return JSON.parse(m.content as string) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/**
 * Rows for the run directories in `folders`. Rows of `previous` scans that had finished are reused
 * without reading their files again (a finished run does not change).
 */
export async function scanWorkspace(
  files: WorkspaceFiles,
  folders: readonly string[],
  previous: readonly RunRow[] = [],
): Promise<RunRow[]> {
  const rows: RunRow[] = [];
  const listings = new Map<string, Set<string>>();
  const exists = async (path: string): Promise<boolean> => {
    // Look a folder up in its parent's listing first: asking for a missing one is a 404 in the console.
    const parent = path.split('/').slice(0, -1).join('/');
    if (parent && !(await exists(parent))) return false;
    if (!listings.has(parent)) {
      try {
        const m = await files.get(parent, { content: true });
        listings.set(
          parent,
          new Set(
            (m.content as { path: string; type: string }[]).filter((i) => i.type === 'directory').map((i) => i.path),
          ),
        );
      } catch {
        listings.set(parent, new Set());
      }
    }
    return listings.get(parent)!.has(path);
  };
  for (const folder of folders) {
    if (!(await exists(folder))) continue;
    let listing;
    try {
      listing = await files.get(folder, { content: true });
    } catch {
      continue;
    }
    for (const item of (listing.content as { type: string; path: string }[]) ?? []) {
      if (item.type !== 'directory') continue;
      const prev = previous.find((r) => r.key === item.path);
      if (prev && prev.status !== 'running' && prev.status !== 'starting') {
        rows.push(prev);
        continue;
      }
      const lock = await readJson(files, `${item.path}/recipe.lock.json`);
      if (!lock) continue;
      const summary = await readJson(files, `${item.path}/summary.json`);
      const metrics = summary ? [] : parseMetrics(await readText(files, `${item.path}/metrics.jsonl`));
      const events = (await readText(files, `${item.path}/events.jsonl`))
        .split('\n')
        .filter(Boolean)
        .slice(0, 3)
        .map((l) => {
          try {
            return JSON.parse(l) as { type?: string; time?: string };
          } catch {
            return {};
          }
        });
      rows.push(rowFromDir(item.path, { lock, summary, metrics, events }));
    }
  }
  return rows;
}

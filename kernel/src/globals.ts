// Types of the globals the kernel gives cells, so they type-check and complete like any API.

/** Ambient declarations added to every cell's type check. */
export const CELL_GLOBALS = `
/** A display in the notebook that can be updated in place. */
interface LatheDisplayHandle {
  /** The display_id Jupyter knows it by. */
  readonly id: string;
  /** Replaces what the display shows. */
  update(value: unknown): void;
}

/**
 * Shows a value below the cell: a recipe as a recipe card, a live run as a live chart,
 * a data report or records as tables, anything else as text.
 */
declare const display: {
  (value: unknown): LatheDisplayHandle;
  /** Shows HTML. */
  html(html: string): LatheDisplayHandle;
  /** Shows Markdown. */
  markdown(markdown: string): LatheDisplayHandle;
  /** Shows plain text. */
  text(text: string): LatheDisplayHandle;
  /** Shows JSON as a tree. */
  json(value: unknown): LatheDisplayHandle;
  /** Shows records as a table (columns default to every key seen). */
  table(rows: readonly Record<string, unknown>[], columns?: string[]): LatheDisplayHandle;
  /** Shows several runs' curves on one chart (default metric: loss). */
  compare(runs: readonly import('lathe').Run[], metrics?: string[]): LatheDisplayHandle;
  /** Shows a raw mime bundle, e.g. { 'text/html': '<b>hi</b>' }. */
  mime(bundle: Record<string, unknown>): LatheDisplayHandle;
};

/** Clears this cell's output; with wait, only when the next output arrives. */
declare function clearOutput(wait?: boolean): void;
`;

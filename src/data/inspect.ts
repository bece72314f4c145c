import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RecipeLock } from '../recipe/lock.js';
import type { CleanCounts } from './clean.js';
import { prepareData, type PreparedData } from './prepare.js';
import type { Rejection } from './doc.js';
import { formatTable } from './table.js';

/** What a recipe's data looks like after the pipeline, and what training will do with it. */
export interface InspectReport {
  sources: {
    name: string;
    weight: number;
    docs: number;
    heldOutDocs: number;
    bytes: number;
    tokens: number;
    heldOutTokens: number;
    /** Passes over this source's training tokens that the recipe's steps imply. */
    epochs: number;
  }[];
  clean: CleanCounts;
  rejected: number;
  rejections: Rejection[];
  vocabSize: number;
  tokensPerStep: number;
  steps: number;
}

/** Builds the report from prepared data. */
export function reportOf(lock: RecipeLock, prepared: PreparedData, vocabSize = prepared.vocabSize): InspectReport {
  const r = lock.recipe;
  const tokensPerStep = r.train.batchSize * r.train.gradAccum * r.model.context;
  const totalWeight = prepared.sources.filter((s) => s.tokens.train > 0).reduce((a, s) => a + s.weight, 0);
  return {
    sources: prepared.sources.map((s) => ({
      name: s.name,
      weight: s.weight,
      docs: s.docs.train,
      heldOutDocs: s.docs.val,
      bytes: s.bytes,
      tokens: s.tokens.train,
      heldOutTokens: s.tokens.val,
      epochs: s.tokens.train > 0 ? (r.train.steps * tokensPerStep * (s.weight / totalWeight)) / s.tokens.train : 0,
    })),
    clean: prepared.clean,
    rejected: prepared.rejected,
    rejections: prepared.rejections,
    vocabSize,
    tokensPerStep,
    steps: r.train.steps,
  };
}

/** Runs the data pipeline of a locked recipe in a scratch folder and reports on it. */
export async function inspectData(lock: RecipeLock): Promise<InspectReport> {
  const dir = await mkdtemp(join(tmpdir(), 'lathe-inspect-'));
  try {
    const prepared = await prepareData(lock, dir);
    return reportOf(lock, prepared, prepared.vocabSize);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The report as text: a table per source, cleaning counts, and rejected lines as file:line. */
export function formatInspect(rep: InspectReport): string {
  const rows = rep.sources.map((s) => [
    s.name,
    s.weight,
    s.docs,
    s.heldOutDocs,
    s.bytes,
    s.tokens,
    s.heldOutTokens,
    s.epochs.toFixed(2),
  ]);
  const c = rep.clean;
  const lines = [
    formatTable(['source', 'weight', 'docs', 'held-out docs', 'bytes', 'tokens', 'held-out tokens', 'epochs'], rows),
    '',
    `tokenizer: ${rep.vocabSize} tokens; training: ${rep.steps} steps × ${rep.tokensPerStep} tokens`,
    `cleaning: ${c.docsIn} docs in, ${c.docsOut} kept; ${c.exactDuplicates} exact and ${c.nearDuplicates} near duplicates removed; ${c.tooShort} too short, ${c.tooLong} too long; ${c.nfcChanged} NFC-normalised; ${c.controlCharsRemoved} control characters removed${c.firstControlChar ? ` (the first at ${c.firstControlChar.file}:${c.firstControlChar.line})` : ''}`,
    `PII found and scrubbed: ${Object.entries(c.pii)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `rejected lines: ${rep.rejected}`,
    ...rep.rejections.map((r) => `  ${r.file}:${r.line}: ${r.reason}`),
  ];
  if (rep.rejected > rep.rejections.length) lines.push(`  … and ${rep.rejected - rep.rejections.length} more`);
  return lines.join('\n');
}

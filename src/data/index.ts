// Data: reading sources, cleaning, PII scrubbing, near-duplicate detection and scanning.

/** Streamed readers for .txt, .jsonl/.json and .csv sources, and the Doc/Rejection types they produce. */
export {
  readSource,
  readSourceBatches,
  fileFormat,
  validateMessages,
  firstInvalidUtf8,
  CHAT_ROLES,
} from './sources.js';
/** Types of documents, chat messages, rejections and reader options. */
export type { Doc, ChatMessage, Rejection, ReadSourceOptions } from './sources.js';
/** Tool calls and tool definitions in chat rows (OpenAI / Mistral function calling), and the check of `tools`. */
export { validateTools, type ToolCall, type ToolSpec } from './messages.js';
/** Expands a source's paths (files, folders, globs) into sorted absolute file paths. */
export { resolveSourceFiles } from '../recipe/files.js';
/** The Cleaner (NFC, control characters, PII, length filters, exact and near dedupe) and its counts helpers. */
export { Cleaner, emptyCleanCounts, diffCleanCounts, copyCleanCounts, hash64, Hash64Set } from './clean.js';
/** Types of cleaning counts and drop reasons. */
export type { CleanCounts, DropReason } from './clean.js';
/** PII scrubbing with typed placeholders, and the checksum validators it uses. */
export { scrubPii, emptyPiiCounts, PII_PLACEHOLDERS, luhnValid, ibanValid, ipv6Valid } from './pii.js';
/** Per-kind PII replacement counts. */
export type { PiiCounts } from './pii.js';
/** MinHash signatures, LSH parameters and the near-duplicate index. */
export {
  MinHasher,
  NearDuplicateIndex,
  estimateJaccard,
  lshParams,
  candidateProbability,
  shingleSet,
  shingleText,
  jaccard,
} from './minhash.js';
/** MinHash and near-duplicate index options. */
export type { MinHashOptions, NearDupOptions } from './minhash.js';
/** Fixed-width text tables for reports. */
export { formatTable, formatCell } from './table.js';
/** Table options. */
export type { TableOptions } from './table.js';
/** Streamed preparation of a locked recipe's data: clean, split, train the tokenizer, encode to token files. */
export { prepareData, isHeldOut, type PreparedData, type PreparedSource, type PrepareProgress } from './prepare.js';
/** Mixing and packing: deterministic, restorable batches; fill-in-the-middle; held-out batches. */
export { BatchSampler, evalBatches, toFim, type SamplerState, type FimTokens } from './batches.js';
/** `lathe data inspect`: the pipeline's report on a recipe's data. */
export { inspectData, formatInspect, reportOf, type InspectReport } from './inspect.js';
/** Post-training rows: SFT chats (roles checked, assistant-only mask, packing), preference pairs, RL prompts. */
export {
  readPostRows,
  inspectPost,
  formatPostInspect,
  trainPostTokenizer,
  type PostRows,
  type PostManifest,
  type Located,
} from './post.js';
export { sftExample, checkRoles, fitExample, SftSampler, sftEvalBatches, toBatch, type SftExample } from './chat.js';
export { pairExample, promptIds, fitSequence, type PairExample } from './pairs.js';
export { promptExample, type PromptExample } from './prompts.js';

/** BPE tokenizers compatible with Hugging Face `tokenizers`. */

/** BPE tokenizer: train, encode/decode, chat rendering, HF `tokenizer.json` load/save. */
export { Tokenizer } from './tokenizer.js';
/** Option and result types of {@link Tokenizer} methods, and what an HF folder's tokenizer_config.json says. */
export type {
  DecodeOptions,
  EncodeOptions,
  FromJsonOptions,
  HfTokenizerConfigOptions,
  HfTokenizerInfo,
  RenderChatOptions,
  RenderedChatIds,
} from './tokenizer.js';
/** The tokenizer of an HF model folder (tokenizer.json + tokenizer_config.json), and that config alone. */
export { loadHfTokenizer, readHfTokenizerInfo } from './hf-folder.js';
/** Training options, progress reports and accepted input for {@link Tokenizer.train}. */
export type { TrainInput, TrainOptions, TrainProgress } from './train.js';
/** Lower-level BPE trainer returning merges as byte-level string pairs. */
export { trainBpe } from './train.js';
/** Result of {@link trainBpe}. */
export type { BpeTrainResult } from './train.js';
/** Special token strings by role, and the role names. */
export { SPECIAL_TOKENS } from './special-tokens.js';
/** Special token role names and the per-tokenizer id record. */
export type { SpecialTokenIds, SpecialTokenName } from './special-tokens.js';
/** Jinja chat template (HF `apply_chat_template`) used by every tokenizer. */
export { CHAT_TEMPLATE, CHAT_ROLES, chatTemplateFor, renderToolCalls, pythonJson } from './chat-template.js';
/** One chat message, tool call and tool definition for {@link Tokenizer.renderChat}. */
export type { ChatMessage, ToolCall, ToolSpec } from './chat-template.js';
/** GPT-2 / HF ByteLevel pre-tokenizer: split text into BPE words. */
export { pretokenize, PRETOKENIZE_PATTERN } from './pretokenize.js';
/** GPT-2 byte <-> printable character table used to spell byte-level tokens. */
export { BYTE_TO_CHAR } from './bytes.js';

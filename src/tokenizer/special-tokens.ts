/** The special tokens every Lathe tokenizer has, by role. Trained tokenizers give them ids 0..9 in this order. */
export const SPECIAL_TOKENS = {
  bos: '<|bos|>',
  eos: '<|eos|>',
  pad: '<|pad|>',
  system: '<|system|>',
  user: '<|user|>',
  assistant: '<|assistant|>',
  end: '<|end|>',
  fimPrefix: '<|fim_prefix|>',
  fimMiddle: '<|fim_middle|>',
  fimSuffix: '<|fim_suffix|>',
} as const;

/** Role name of a special token (`'bos'`, `'user'`, `'fimPrefix'`, ...). */
export type SpecialTokenName = keyof typeof SPECIAL_TOKENS;

/** Ids of the special tokens of one tokenizer. */
export type SpecialTokenIds = { readonly [K in SpecialTokenName]: number };

/** Special token names in id order for trained tokenizers. */
export const SPECIAL_TOKEN_NAMES = Object.keys(SPECIAL_TOKENS) as SpecialTokenName[];

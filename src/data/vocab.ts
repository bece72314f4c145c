import { Tokenizer } from '../tokenizer/index.js';

// Continued pre-training may teach a base model new tokens (a domain's keywords, markup): they are
// added to the base's tokenizer as HF `add_tokens` does (whole-string tokens matched before BPE),
// through the tokenizer.json form, so any tokenizer Lathe loads can be extended.

/** Tokens added to a tokenizer, and the new ids. */
export interface AddedVocab {
  tokenizer: Tokenizer;
  /** Each added token and its id; tokens already in the vocabulary are not added again. */
  added: { content: string; id: number }[];
}

/** `tokens` added to `tokenizer` as non-special added tokens with ids from its vocabulary size up. */
export function addTokens(tokenizer: Tokenizer, tokens: readonly string[]): AddedVocab {
  const json = tokenizer.toJSON() as { added_tokens?: Record<string, unknown>[] };
  const list = [...(json.added_tokens ?? [])];
  const added: AddedVocab['added'] = [];
  let next = tokenizer.vocabSize;
  for (const content of tokens) {
    if (tokenizer.tokenToId(content) !== undefined || added.some((a) => a.content === content)) continue;
    const id = next++;
    list.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false });
    added.push({ content, id });
  }
  if (!added.length) return { tokenizer, added };
  return { tokenizer: Tokenizer.fromJSON({ ...json, added_tokens: list }), added };
}

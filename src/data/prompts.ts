import type { Tokenizer } from '../tokenizer/index.js';
import { validateTools } from './messages.js';
import { promptIds } from './pairs.js';
import type { Doc } from './doc.js';

// Prompts for the online stages (online DPO, GRPO): {"prompt": string | messages, ...} rows. The
// whole row goes to the reward function as `example`.

/** A tokenized prompt. */
export interface PromptExample {
  ids: number[];
  /** Token ids that end a completion: eos and <|end|>, for plain prompts as for chat ones. */
  stop: number[];
  /** The prompt text as the reward function sees it (a chat prompt: the rendered chat). */
  text: string;
}

/** A prompt row as a tokenized prompt; a reason string when malformed or too long. */
export function promptExample(
  doc: Doc,
  tokenizer: Tokenizer,
  o: { context: number; maxNewTokens: number },
): PromptExample | string {
  const row = doc.row ?? {};
  if (row.prompt === undefined) {
    const keys = Object.keys(row);
    return `missing field "prompt"; fields present: ${keys.length ? keys.join(', ') : 'none'}`;
  }
  const tools = validateTools(row.tools);
  if (typeof tools === 'string') return tools;
  const p = promptIds(row.prompt, 'prompt', tokenizer, tools);
  if (typeof p === 'string') return p;
  if (p.ids.length + o.maxNewTokens > o.context) {
    return `prompt has ${p.ids.length} tokens; with train.maxNewTokens ${o.maxNewTokens} it exceeds model.context ${o.context}`;
  }
  // A chat-tuned policy ends its answers with <|end|> even after a plain prompt; stopping only at
  // eos there let it run on to maxNewTokens, and the reward saw text after the answer.
  const stop = [tokenizer.special.eos, tokenizer.special.end];
  return { ids: p.ids, stop, text: typeof row.prompt === 'string' ? row.prompt : tokenizer.decode(p.ids) };
}

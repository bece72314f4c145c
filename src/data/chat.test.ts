import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SourceSchema } from '../recipe/schema.js';
import { englishLikeCorpus } from '../tokenizer/test/corpus.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { checkRoles, sftExample } from './chat.js';
import type { Doc } from './doc.js';
import type { ChatMessage } from './messages.js';
import { pairExample } from './pairs.js';
import { promptExample } from './prompts.js';
import { readSource } from './sources.js';

let dir: string;
let tok: Tokenizer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lathe-chat-'));
  tok = await Tokenizer.train(englishLikeCorpus(7, 300), { vocabSize: 350 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const call = (id: string | undefined, name = 'f') => ({ ...(id ? { id } : {}), function: { name, arguments: '{}' } });
const u = (content = 'q'): ChatMessage => ({ role: 'user', content });
const a = (content = 'a', ids?: (string | undefined)[]): ChatMessage => ({
  role: 'assistant',
  content,
  ...(ids ? { tool_calls: ids.map((id) => call(id)) } : {}),
});
const t = (id?: string): ChatMessage => ({ role: 'tool', content: 'r', ...(id ? { tool_call_id: id } : {}) });

/** Reads one JSONL row as the SFT stage does. */
async function docOf(row: unknown): Promise<Doc> {
  const f = join(dir, `row-${Math.random().toString(36).slice(2)}.jsonl`);
  await writeFile(f, JSON.stringify(row) + '\n');
  const docs: Doc[] = [];
  for await (const d of readSource(SourceSchema.parse({ path: f }), [f], {
    source: 's',
    onError: 'fail',
    requireText: false,
  }))
    docs.push(d);
  return docs[0]!;
}

describe('checkRoles with tool calls', () => {
  it('accepts calls answered by one tool message each, in any order, then the assistant again', () => {
    expect(checkRoles([u(), a('', ['x', 'y']), t('y'), t('x'), a()])).toBeUndefined();
    expect(checkRoles([u(), a('', [undefined]), t(), a(), u(), a()])).toBeUndefined();
    expect(checkRoles([u(), a('calling', ['x'])])).toBeUndefined(); // a chat may end on the call itself
    expect(checkRoles([u(), a('', ['x']), t('x')], { endWith: 'user' })).toBeUndefined();
  });

  it('names the message that breaks the protocol', () => {
    expect(checkRoles([u(), a('', ['x', 'y']), t('x'), a()])).toBe(
      'messages[3]: messages[1] made 2 tool calls, but only 1 tool result follows it; add a tool message for each call',
    );
    expect(checkRoles([u(), a('', ['x']), t('x'), t('x'), a()])).toMatch(
      /^messages\[3\]\.role "tool" is not supported here: .*messages\[1\]'s calls are all answered$/,
    );
    expect(checkRoles([u(), a(), t(), u(), a()])).toBe(
      'messages[2].role "tool" is not supported after an assistant message: each tool result answers one of the tool_calls of the assistant message before it',
    );
    expect(checkRoles([u(), a('', ['x']), t('z'), a()])).toBe(
      'messages[2].tool_call_id "z" names no unanswered call of messages[1] (ids: "x")',
    );
    expect(checkRoles([u(), a('', ['x']), t('x')])).toBe('messages must end with an assistant message, not tool');
    expect(checkRoles([u(), a('', ['x', 'y']), t('x')], { endWith: 'user' })).toBe(
      'messages must end where the assistant speaks next, but messages[1] has 1 unanswered tool call',
    );
    expect(checkRoles([u(), a('  ')])).toBe('messages[1]: empty assistant message');
    expect(checkRoles([t(), u(), a()])).toMatch(/^messages\[0\]\.role "tool" is not supported first: /);
  });
});

describe('SFT, DPO and prompt rows with tool calls', () => {
  const chat = {
    tools: [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }],
    messages: [
      { role: 'user', content: 'find tally' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'c1', type: 'function', function: { name: 'lookup', arguments: '{"q": "tally"}' } }],
      },
      { role: 'tool', tool_call_id: 'c1', content: 'a pricing language' },
      { role: 'assistant', content: 'It is a pricing language.' },
    ],
  };

  it('SFT: the loss falls on the tool call and the answer, not on the tool result or the definitions', async () => {
    const ex = sftExample(await docOf(chat), tok, true);
    if (typeof ex === 'string') throw new Error(ex);
    const trained = tok.decode(ex.ids.filter((_, i) => ex.mask[i] === 1));
    expect(trained).toBe(
      '<tool_call>{"id": "c1", "name": "lookup", "arguments": {"q": "tally"}}</tool_call><|end|>It is a pricing language.<|end|>',
    );
    expect(tok.decode(ex.ids)).toBe(
      '<|bos|><|system|><tools>[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]</tools><|end|>' +
        '<|user|>find tally<|end|><|assistant|><tool_call>{"id": "c1", "name": "lookup", "arguments": {"q": "tally"}}</tool_call><|end|>' +
        '<|tool|><tool_result id="c1">a pricing language</tool_result><|end|><|assistant|>It is a pricing language.<|end|>',
    );
  });

  it('SFT: malformed tools, or tools beside prompt/completion, are refused rather than dropped', async () => {
    expect(sftExample(await docOf({ ...chat, tools: { name: 'x' } }), tok, true)).toBe(
      'tools must be an array of tool definitions, got object',
    );
    expect(sftExample(await docOf({ prompt: 'p', completion: 'c', tools: [] }), tok, true)).toBe(
      'tools are rendered by the chat template: write the row as "messages" to use them, not "prompt" and "completion"',
    );
  });

  it('DPO: a chat prompt ending in tool results, completions that call tools', async () => {
    const prompt = chat.messages.slice(0, 3);
    const chosen = [{ role: 'assistant', content: 'A pricing language.' }];
    const rejected = [{ role: 'assistant', content: '', tool_calls: [call('c2', 'lookup')] }];
    const p = pairExample(await docOf({ tools: chat.tools, prompt, chosen, rejected }), tok, 512);
    if (typeof p === 'string') throw new Error(p);
    expect(tok.decode(p.prompt).endsWith('</tool_result><|end|><|assistant|>')).toBe(true);
    expect(tok.decode(p.prompt).startsWith('<|bos|><|system|><tools>')).toBe(true);
    expect(tok.decode(p.chosen)).toBe('A pricing language.<|end|>');
    expect(tok.decode(p.rejected)).toBe(
      '<tool_call>{"id": "c2", "name": "lookup", "arguments": {}}</tool_call><|end|>',
    );
  });

  it('prompts: tools with a plain-text prompt are refused', async () => {
    expect(
      promptExample(await docOf({ prompt: 'hi', tools: chat.tools }), tok, { context: 256, maxNewTokens: 8 }),
    ).toBe('tools are rendered by the chat template: make prompt a list of chat messages, not a string');
    const ok = promptExample(await docOf({ prompt: chat.messages.slice(0, 3), tools: chat.tools }), tok, {
      context: 512,
      maxNewTokens: 8,
    });
    expect(typeof ok === 'string' ? ok : ok.text.endsWith('<|assistant|>')).toBe(true);
  });
});

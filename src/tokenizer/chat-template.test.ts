/**
 * The chat template: TypeScript rendering and the Jinja template HF's `apply_chat_template` runs
 * (transformers in the project's .venv) give the same text and ids, with tool calls and tool results.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pythonJson, renderChatText, type ChatMessage, type ToolSpec } from './chat-template.js';
import { englishLikeCorpus } from './test/corpus.js';
import { Tokenizer } from './tokenizer.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const PYTHON = join(repoRoot, '.venv', 'bin', 'python');
const SETUP_HINT = 'run `npm run setup` to create .venv with the pinned transformers';

function runPython(script: string, input: unknown): any {
  if (!existsSync(PYTHON)) throw new Error(`Python venv not found at ${PYTHON}; ${SETUP_HINT}`);
  const r = spawnSync(PYTHON, ['-c', script], {
    input: JSON.stringify(input),
    encoding: 'utf8',
    maxBuffer: 1 << 28,
    timeout: 120_000,
    env: { ...process.env, HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false' },
  });
  if (r.error) throw new Error(`could not run ${PYTHON} (${r.error.message}); ${SETUP_HINT}`);
  if (r.status !== 0) throw new Error(`python exited with ${r.status}:\n${r.stderr.slice(-4000)}`);
  return JSON.parse(r.stdout);
}

const HF_CHAT = `import json, sys
req = json.loads(sys.stdin.buffer.read().decode('utf-8'))
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(req['dir'])
out = []
for c in req['chats']:
    kw = dict(add_generation_prompt=c['gen'], tools=c.get('tools'))
    text = tok.apply_chat_template(c['messages'], tokenize=False, **kw)
    ids = tok(text, add_special_tokens=False)['input_ids']
    out.append({'text': text, 'ids': ids})
json.dump({'chats': out, 'json': [json.dumps(v, ensure_ascii=False) for v in req['json']]}, sys.stdout)
`;

const TOOLS: ToolSpec[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Weather in a city — "quoted", ünïcode, a tab\tand a newline\n',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string' }, days: { type: 'integer', minimum: 1, maximum: 14 } },
        required: ['city'],
      },
    },
  },
  { type: 'function', function: { name: 'convert', parameters: { scale: 0.5, tiny: 1.5e-7, big: 2.5e17, neg: -3 } } },
];

/** Chats in OpenAI / Mistral function-calling format, as a row would carry them (content null included). */
const CHATS: { messages: Record<string, unknown>[]; tools?: ToolSpec[]; gen: boolean }[] = [
  {
    gen: true,
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ],
  },
  {
    gen: false,
    tools: TOOLS,
    messages: [
      { role: 'user', content: 'Weather in Paris and Oslo, in °C?' },
      {
        role: 'assistant',
        content: 'Checking both.',
        tool_calls: [
          { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } },
          { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo","days":2}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_1', name: 'get_weather', content: '{"temp": 21.5}' },
      { role: 'tool', tool_call_id: 'call_2', content: 'snow, "cold" <b>' },
      { role: 'assistant', content: 'Paris 21.5 °C; Oslo snowing.' },
    ],
  },
  {
    gen: true,
    messages: [
      { role: 'user', content: 'Convert 3 km.' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ function: { name: 'convert', arguments: { value: 3, unit: 'km', ratio: 0.621371, ok: true } } }],
      },
      { role: 'tool', content: '1.86 mi' },
    ],
  },
];

let dir: string;
let tok: Tokenizer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lathe-chat-template-'));
  tok = await Tokenizer.train(englishLikeCorpus(3, 400), { vocabSize: 400 });
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok.toJSON()));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.hfTokenizerConfig()));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('chat template with tool calls', () => {
  it('HF apply_chat_template renders the same text and ids as renderChat, tools and tool calls included', () => {
    const jsonValues = [TOOLS, 0.1, 1e-5, 123456.789, 1.5e16, -2.5e-7, 'é"\\\n\u0001', { a: [1, 2.25, null, false] }];
    const hf = runPython(HF_CHAT, { dir, chats: CHATS, json: jsonValues });
    expect(jsonValues.map(pythonJson)).toEqual(hf.json);
    CHATS.forEach((c, i) => {
      const messages = c.messages.map((m) => ({ ...m, content: (m.content as string | null) ?? '' })) as ChatMessage[];
      const { text } = renderChatText(messages, c.gen, c.tools);
      expect(text, `chat ${i}`).toBe(hf.chats[i].text);
      expect(tok.renderChat(messages, { addGenerationPrompt: c.gen, tools: c.tools }).ids, `chat ${i}`).toEqual(
        hf.chats[i].ids,
      );
    });
    expect(hf.chats[1].text).toBe(
      '<|bos|><|system|><tools>' +
        pythonJson(TOOLS) +
        '</tools><|end|><|user|>Weather in Paris and Oslo, in °C?<|end|>' +
        '<|assistant|>Checking both.<tool_call>{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' +
        '<tool_call>{"id": "call_2", "name": "get_weather", "arguments": {"city":"Oslo","days":2}}</tool_call><|end|>' +
        '<|tool|><tool_result id="call_1" name="get_weather">{"temp": 21.5}</tool_result><|end|>' +
        '<|tool|><tool_result id="call_2">snow, "cold" <b></tool_result><|end|>' +
        '<|assistant|>Paris 21.5 °C; Oslo snowing.<|end|>',
    );
    expect(hf.chats[2].text).toBe(
      '<|bos|><|user|>Convert 3 km.<|end|><|assistant|><tool_call>{"name": "convert", "arguments": ' +
        '{"value": 3, "unit": "km", "ratio": 0.621371, "ok": true}}</tool_call><|end|>' +
        '<|tool|><tool_result>1.86 mi</tool_result><|end|><|assistant|>',
    );
  });

  it('trains on the assistant content and tool calls, never on tool results or tool definitions', () => {
    const msgs: ChatMessage[] = [
      { role: 'user', content: 'q' },
      {
        role: 'assistant',
        content: 'calling',
        tool_calls: [{ id: 'c1', function: { name: 'f', arguments: '{"x": 1}' } }],
      },
      { role: 'tool', tool_call_id: 'c1', content: 'result' },
      { role: 'assistant', content: 'done' },
    ];
    const { ids, mask } = tok.renderChat(msgs, { tools: [{ name: 'f' }] });
    const s = tok.special;
    const e = (t: string): number[] => tok.encode(t);
    const expected: Array<[number[], number]> = [
      [[s.bos, s.system], 0],
      [e('<tools>[{"name": "f"}]</tools>'), 0],
      [[s.end, s.user], 0],
      [e('q'), 0],
      [[s.end, s.assistant], 0],
      [e('calling<tool_call>{"id": "c1", "name": "f", "arguments": {"x": 1}}</tool_call>'), 1],
      [[s.end], 1],
      [e('<|tool|><tool_result id="c1">result</tool_result>'), 0],
      [[s.end, s.assistant], 0],
      [e('done'), 1],
      [[s.end], 1],
    ];
    expect(ids).toEqual(expected.flatMap(([part]) => part));
    expect(mask).toEqual(expected.flatMap(([part, m]) => part.map(() => m)));
    // weight 0 leaves the calls out of the loss too
    const w0 = tok.renderChat([msgs[0]!, { ...msgs[1]!, weight: 0 }]);
    expect(w0.mask.every((m) => m === 0)).toBe(true);
  });

  it('refuses tool calls on a message that is not the assistant', () => {
    expect(() =>
      renderChatText([{ role: 'user', content: 'x', tool_calls: [{ function: { name: 'f', arguments: '{}' } }] }]),
    ).toThrow('renderChat: messages[0].tool_calls belong to assistant messages, not user');
  });
});

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RecipeLock } from '../recipe/lock.js';
import { pretokenize } from '../tokenizer/index.js';
import { resolveRecipe } from '../recipe/validate.js';
import { trainPostTokenizer } from './post.js';

describe('trainPostTokenizer', () => {
  it('learns from tool calls, tool results and tool definitions as the chat template writes them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-post-'));
    try {
      const file = join(dir, 'tools.jsonl');
      const rows = Array.from({ length: 60 }, (_, i) => ({
        tools: [{ type: 'function', function: { name: 'lookup' } }],
        messages: [
          { role: 'user', content: `find ${i}` },
          {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: `c${i}`, function: { name: 'lookup', arguments: `{"q": ${i}}` } }],
          },
          { role: 'tool', tool_call_id: `c${i}`, content: `item ${i}` },
          { role: 'assistant', content: `found ${i}` },
        ],
      }));
      await writeFile(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
      const recipe = resolveRecipe({
        stage: 'sft',
        data: { sources: [{ path: file }] },
        tokenizer: { vocabSize: 400 },
      });
      const lock = { recipe, data: [{ source: 's', files: [{ path: file }] }] } as unknown as RecipeLock;
      const tok = await trainPostTokenizer(lock);
      // Seen 60 times each, every pre-token of these strings merges into one token (not one per byte).
      for (const s of ['<tool_call>', '{"id": "', '"arguments": {"q": ', '<|tool|><tool_result>', '"function"'])
        expect(tok.encode(s).length, s).toBe(pretokenize(s).length);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

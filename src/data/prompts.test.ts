import { describe, expect, it } from 'vitest';
import { Tokenizer } from '../tokenizer/index.js';
import { promptExample } from './prompts.js';

describe('promptExample', () => {
  it('stops plain and chat prompts at eos and at <|end|>; refuses rows without a prompt or too long', async () => {
    const tok = await Tokenizer.train(['let a = 1\nemit a * 2\n'.repeat(20)], { vocabSize: 300 });
    const o = { context: 64, maxNewTokens: 8 };
    const plain = promptExample({ text: '', row: { prompt: 'let a = 1\n' } } as never, tok, o);
    const chat = promptExample({ text: '', row: { prompt: [{ role: 'user', content: 'emit 2' }] } } as never, tok, o);
    for (const p of [plain, chat]) {
      if (typeof p === 'string') throw new Error(p);
      expect(p.stop).toEqual([tok.special.eos, tok.special.end]);
    }
    expect(typeof plain !== 'string' && plain.text).toBe('let a = 1\n');
    expect(promptExample({ text: '', row: { question: 'x' } } as never, tok, o)).toBe(
      'missing field "prompt"; fields present: question',
    );
    expect(promptExample({ text: '', row: { prompt: 'let a = 1\n'.repeat(20) } } as never, tok, o)).toMatch(
      /exceeds model.context 64/,
    );
  });
});

import { describe, expect, it } from 'vitest';
import { cutCompletion, extractProgram, parses, programReward } from './reward.js';

const example = {
  prompt: 'let px = 101.25\nlet qty = 300\nlet notional = px * qty\nlet fee = notional * bps(2.5)\nemit ',
  expected: '7.5938',
};

describe('programReward', () => {
  it('gives 1 when the completed program prints the expected output', () => {
    expect(programReward('fee', example)).toBe(1);
    expect(programReward('fee\n', example)).toBe(1);
    expect(programReward('fee\n\nlet junk = ((( ', example)).toBe(1);
    expect(programReward('fee<|endoftext|>garbage', example)).toBe(1);
    // Any expression with the right value counts: the check is on behaviour, not text.
    expect(programReward('notional * bps(2.5)', example)).toBe(1);
  });

  it('gives 0.5 when it runs but prints something else', () => {
    expect(programReward('notional', example)).toBe(0.5);
    expect(programReward('round(fee, 2)', example)).toBe(0.5);
    expect(programReward('fee\nemit qty', example)).toBe(0.5);
  });

  it('gives 0 when it does not parse or fails at run time', () => {
    expect(programReward('', example)).toBe(0);
    expect(programReward('\n\nfee', example)).toBe(0);
    expect(programReward('fee +', example)).toBe(0);
    expect(programReward('fee\nlet x = 1', example)).toBe(0); // must end with emit
    expect(programReward('pnl', example)).toBe(0); // unknown variable
    expect(programReward('fee / 0', example)).toBe(0);
    expect(programReward('Fee', example)).toBe(0);
  });
});

describe('parses', () => {
  it('accepts the first program of a sample and rejects junk', () => {
    expect(parses('let px = 1\nemit px')).toBe(true);
    expect(parses('\n\nlet px = 1\nemit px\n\nthis is not tally')).toBe(true);
    expect(parses('let px = 1\nemit px</s>lorem')).toBe(true);
    expect(parses('let px = 1\nemit')).toBe(false);
    expect(parses('hello world')).toBe(false);
    expect(parses('')).toBe(false);
    // Parsing is syntax only: unknown variables are a run-time matter.
    expect(parses('emit nobody')).toBe(true);
  });
});

describe('cutting', () => {
  it('stops at the first blank line or end marker', () => {
    expect(cutCompletion('a\nb\n\nc')).toBe('a\nb');
    expect(cutCompletion('a\n  \nc')).toBe('a');
    expect(cutCompletion('a<eos>\n\nc')).toBe('a');
    expect(cutCompletion('abc')).toBe('abc');
    expect(extractProgram('\n \nx\n\ny')).toBe('x');
  });
});

import { describe, expect, it } from 'vitest';
import { formatNumber, parse, run } from './lang.js';

/** Runs a program and returns its output, failing the test on any error. */
function out(source: string): string {
  const res = run(source);
  if (!res.ok) throw new Error(`unexpected failure: ${res.error}`);
  return res.output;
}

/** Runs a program that must fail and returns its error message. */
function err(source: string, opts?: { maxSteps?: number }): string {
  const res = run(source, opts);
  if (res.ok) throw new Error(`expected an error, got output ${JSON.stringify(res.output)}`);
  return res.error;
}

describe('arithmetic', () => {
  it('respects precedence, parentheses and left associativity', () => {
    expect(out('emit 2 + 3 * 4')).toBe('14');
    expect(out('emit (2 + 3) * 4')).toBe('20');
    expect(out('emit 10 - 4 - 3')).toBe('3');
    expect(out('emit 10 - (4 - 3)')).toBe('9');
    expect(out('emit 100 / 8 / 5')).toBe('2.5');
    expect(out('emit 2 * -3 + 1')).toBe('-5');
    expect(out('emit -(2 + 3) * 2')).toBe('-10');
  });

  it('binds and updates variables', () => {
    const src = [
      'let px = 101.25',
      'let qty = 300',
      'let notional = px * qty',
      'set qty = qty / 2',
      'emit notional',
      'emit qty',
    ].join('\n');
    expect(out(src)).toBe('30375\n150');
  });

  it('has finance built-ins', () => {
    expect(out('emit bps(25)')).toBe('0.0025');
    expect(out('emit 1000000 * bps(2.5)')).toBe('250');
    expect(out('emit min(3, 1, 2)\nemit max(3, 7)\nemit abs(-4.5)')).toBe('1\n7\n4.5');
    expect(out('emit round(2.675, 2)\nemit round(-1.5, 0)\nemit round(1234.5678, 1)')).toBe('2.68\n-2\n1234.6');
  });
});

describe('number formatting', () => {
  it('prints at most 4 decimals with trailing zeros trimmed', () => {
    expect(out('emit 1 / 3')).toBe('0.3333');
    expect(out('emit 2 / 3')).toBe('0.6667');
    expect(out('emit 0.1 + 0.2')).toBe('0.3');
    expect(out('emit 1.50')).toBe('1.5');
    expect(out('emit 3.0')).toBe('3');
    expect(out('emit 1234567.5')).toBe('1234567.5');
  });

  it('never prints negative zero', () => {
    expect(out('emit -0.00001')).toBe('0');
    expect(out('emit 0 * -1')).toBe('0');
    expect(formatNumber(-0)).toBe('0');
    expect(formatNumber(-12.34567)).toBe('-12.3457');
  });
});

describe('control flow', () => {
  it('takes the right if/else branch', () => {
    const src = (px: string): string =>
      [
        `let px = ${px}`,
        'let strike = 100',
        'let payoff = 0',
        'if px > strike then set payoff = px - strike else set payoff = 0',
        'emit payoff',
      ].join('\n');
    expect(out(src('112.5'))).toBe('12.5');
    expect(out(src('99'))).toBe('0');
    expect(out('if 1 >= 1 then emit 1 else emit 2\nemit 3')).toBe('1\n3');
    expect(out('if 1 != 1 then emit 1 else emit 2\nemit 3')).toBe('2\n3');
  });

  it('gives "and" precedence over "or"', () => {
    expect(out('if 1 > 2 and 1 > 2 or 2 > 1 then emit 1 else emit 0\nemit 9')).toBe('1\n9');
    expect(out('if 2 > 1 or 1 > 2 and 1 > 2 then emit 1 else emit 0\nemit 9')).toBe('1\n9');
    expect(out('if 2 > 1 and 1 > 2 then emit 1 else emit 0\nemit 9')).toBe('0\n9');
  });

  it('repeats exactly N times, nested loops multiply', () => {
    expect(out('let c = 0\nrepeat 5 {\n  set c = c + 1\n}\nemit c')).toBe('5');
    expect(out('let c = 0\nrepeat 3 {\n  repeat 4 {\n    set c = c + 1\n  }\n}\nemit c')).toBe('12');
    expect(out('let cash = 100\nrepeat 3 {\n  set cash = cash * 2\n  emit cash\n}\nemit cash')).toBe(
      '200\n400\n800\n800',
    );
  });

  it('rejects bad repeat counts and bodies at parse time', () => {
    expect(err('repeat 0 {\n  emit 1\n}\nemit 1')).toBe('1:8: expected a positive whole repeat count');
    expect(err('repeat 2.5 {\n  emit 1\n}\nemit 1')).toBe('1:8: expected a positive whole repeat count');
    expect(err('let n = 2\nrepeat n {\n  emit 1\n}\nemit 1')).toBe('2:8: expected a positive whole repeat count');
    expect(err('repeat 2 {\n}\nemit 1')).toBe('2:1: repeat body is empty');
    expect(err('repeat 3 {\n  let a = 1\n}\nemit 1')).toBe('2:3: "let" is not allowed inside repeat, use "set"');
    expect(err('repeat 2 { emit 1 }\nemit 1')).toBe('1:12: expected end of line after "{"');
  });
});

describe('step limit', () => {
  it('stops a huge loop with an error instead of hanging', () => {
    const started = Date.now();
    expect(err('let c = 0\nrepeat 1000000000 {\n  set c = c + 1\n}\nemit c')).toMatch(
      /^2:1: step limit exceeded \(10000 steps\)$/,
    );
    expect(err('let c = 0\nrepeat 100000 {\n  repeat 100000 {\n    set c = c + 1\n  }\n}\nemit c')).toMatch(
      /step limit exceeded/,
    );
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('honours maxSteps', () => {
    const src = 'let c = 0\nrepeat 10 {\n  set c = c + 1\n}\nemit c';
    // 1 let + 1 repeat + 10 iterations + 10 sets + 1 emit = 23 steps.
    expect(run(src, { maxSteps: 23 })).toEqual({ ok: true, output: '10' });
    expect(err(src, { maxSteps: 22 })).toMatch(/step limit exceeded \(22 steps\)/);
  });
});

describe('parse errors', () => {
  it('name line and column', () => {
    const res = parse('let x = 1\nlet y = (x + 2\nemit y');
    expect(res).toEqual({ ok: false, error: '2:15: expected ")"', line: 2, col: 15 });
  });

  it.each([
    ['let x = 1\nemit X', '2:6: unexpected character "X"'],
    ['let x = 007\nemit x', '1:9: leading zeros are not allowed'],
    ['emit 1.', '1:8: expected digit after "."'],
    ['let x = 1\nemit x\nlet y = 2', '3:1: program must end with emit'],
    ['', '1:1: program must end with emit'],
    ['emit foo(1)', '1:6: unknown function "foo"'],
    ['emit round(1)', '1:6: round takes 2 arguments'],
    ['let then = 1\nemit 1', '1:5: "then" is a keyword, expected a variable name'],
    ['let min = 1\nemit 1', '1:5: "min" is a built-in function, not a variable'],
    ['emit 1 +', '1:9: expected an expression'],
    ['emit 1 2', '1:8: expected end of line'],
    ['if 1 then emit 1 else emit 2\nemit 1', '1:6: expected a comparison operator'],
    ['if 1 > 0 then emit 1\nemit 1', '1:21: expected "else"'],
    ['if 1 > 0 then let a = 1 else emit 2\nemit 1', '1:15: expected "set" or "emit"'],
    ['}\nemit 1', '1:1: unexpected "}"'],
    ['repeat 2 {\n  emit 1\nemit 2', '3:7: expected "}"'],
    ['px = 3\nemit px', '1:1: expected "let", "set", "emit", "if" or "repeat"'],
    ['emit 1 < 2', '1:8: expected end of line'],
  ])('%j -> %s', (src, message) => {
    const res = parse(src);
    expect(res.ok).toBe(false);
    if (!res.ok) {
      expect(res.error).toBe(message);
      expect(`${res.line}:${res.col}`).toBe(message.split(': ')[0]);
    }
  });

  it('accepts blank lines, indentation, CRLF and a trailing newline', () => {
    expect(out('let a = 1\r\n\n  let b = 2\n\temit a + b\n')).toBe('3');
  });
});

describe('runtime errors', () => {
  it.each([
    ['emit x', '1:6: unknown variable "x"'],
    ['set a = 1\nemit 1', '1:1: unknown variable "a"'],
    ['let a = 1\nlet a = 2\nemit a', '2:1: "a" is already defined, use "set"'],
    ['let a = 0\nemit 5 / a', '2:8: division by zero'],
    ['emit 999999 * 9999999', '1:13: number out of range (limit 1e12)'],
    ['emit round(1.5, 5)', '1:6: round digits must be a whole number from 0 to 4'],
  ])('%j -> %s', (src, message) => {
    const res = run(src);
    expect(res).toEqual({
      ok: false,
      error: message,
      line: Number(message.split(':')[0]),
      col: Number(message.split(':')[1]),
    });
  });

  it('is deterministic', () => {
    const src = 'let cash = 1000\nrepeat 7 {\n  set cash = cash * (1 + bps(45))\n}\nemit round(cash, 2)\nemit cash';
    expect(run(src)).toEqual(run(src));
    expect(out(src)).toBe('1031.93\n1031.9285');
  });
});

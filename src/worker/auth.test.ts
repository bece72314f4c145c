import { writeFile } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bearerToken, readTokenFile, tokenMatches } from './auth.js';

describe('worker auth', () => {
  it('matches tokens exactly, whatever their length', () => {
    expect(tokenMatches('a-long-enough-token-123', 'a-long-enough-token-123')).toBe(true);
    expect(tokenMatches('a-long-enough-token-123', 'a-long-enough-token-124')).toBe(false);
    expect(tokenMatches('a-long-enough-token-123', 'a')).toBe(false);
    expect(tokenMatches('a-long-enough-token-123', '')).toBe(false);
    expect(tokenMatches('a-long-enough-token-123', undefined)).toBe(false);
  });

  it('reads bearer headers', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer abc ')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });

  it('reads a token file, refusing empty or short tokens with the flag named', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-auth-'));
    await writeFile(join(dir, 'ok'), '  0123456789abcdef0123\n');
    expect(readTokenFile(join(dir, 'ok'))).toBe('0123456789abcdef0123');
    await writeFile(join(dir, 'empty'), '\n');
    expect(() => readTokenFile(join(dir, 'empty'))).toThrow(/^--token-file .*empty: the file is empty/);
    await writeFile(join(dir, 'short'), 'abc');
    expect(() => readTokenFile(join(dir, 'short'))).toThrow(/the token is 3 characters; use at least 16/);
    expect(() => readTokenFile(join(dir, 'missing'))).toThrow(/cannot read the token \(no such file\)/);
  });
});

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { LatheError } from '../errors.js';

/** Reads a token file (surrounding whitespace dropped); an empty or unreadable file is an error naming the flag. */
export function readTokenFile(path: string, flag = '--token-file'): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new LatheError(
      `${flag} ${path}: cannot read the token (${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message})`,
    );
  }
  const token = text.trim();
  if (!token)
    throw new LatheError(
      `${flag} ${path}: the file is empty; write a long random token into it, e.g. openssl rand -hex 32 > ${path}`,
    );
  if (token.length < 16)
    throw new LatheError(
      `${flag} ${path}: the token is ${token.length} characters; use at least 16 (e.g. openssl rand -hex 32)`,
    );
  return token;
}

/** True when a token file can be read by users other than its owner (worth a warning). */
export function tokenFileIsShared(path: string): boolean {
  try {
    return (statSync(path).mode & 0o077) !== 0;
  } catch {
    return false;
  }
}

/**
 * Compares a presented token with the expected one in constant time. Both are hashed first, so the
 * comparison takes the same time whatever the length or the first differing byte.
 */
export function tokenMatches(expected: string, presented: string | undefined): boolean {
  if (presented === undefined) return false;
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(presented).digest();
  return timingSafeEqual(a, b);
}

/** The token in an `Authorization: Bearer <token>` header, if any. */
export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m?.[1];
}

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { JobQueue } from './jobs.js';

describe('job log', () => {
  it('numbers lines as job.log holds them, ends a torn last line first, and keeps one entry on one line', async () => {
    const state = await scratch('lathe-joblog-');
    await mkdir(join(state, 'jobs', 'j1'), { recursive: true });
    // As a worker killed mid-write leaves it: the last line has no newline.
    await writeFile(join(state, 'jobs', 'j1', 'job.log'), 'a\nb\ntorn');
    const q = new JobQueue(state);
    expect(q.logCount('j1')).toBe(3);
    expect(await readFile(join(state, 'jobs', 'j1', 'job.log'), 'utf8')).toBe('a\nb\ntorn\n');
    const heard: [string, string, number][] = [];
    q.on('log', (id: string, line: string, seq: number) => heard.push([id, line, seq]));
    q.log('j1', 'next');
    q.log('j1', 'two\nlines');
    expect(heard.map(([id, , seq]) => [id, seq])).toEqual([
      ['j1', 3],
      ['j1', 4],
    ]);
    expect(heard[1]![1]).toMatch(/^\S+Z two \u23ce lines$/);
    const lines = q.readLog('j1');
    expect(lines.slice(0, 3)).toEqual(['a', 'b', 'torn']);
    expect(lines.slice(3)).toEqual(heard.map(([, line]) => line));
    expect(q.readLog('j1', 4)).toEqual([heard[1]![1]]);
    expect(q.readLog('j1', 5)).toEqual([]);
    // A job with no log yet starts at 0; its folder is made for it.
    q.log('j2', 'first');
    expect(q.logCount('j2')).toBe(1);
    const [id2, , seq2] = heard.at(-1)!;
    expect([id2, seq2]).toEqual(['j2', 0]);
    // A second queue on the same folder (a restarted worker) counts the same lines.
    expect(new JobQueue(state).logCount('j1')).toBe(5);
  });
});

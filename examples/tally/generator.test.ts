import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildDataset, main } from './generate.js';
import { PROGRAM_LIMITS, createRng, generateProgram, generateTask, type Rng } from './generator.js';
import { parse, run } from './lang.js';

const DATA_DIR = new URL('../data/tally/', import.meta.url);
// Must match the command recorded in examples/data/tally/README.md.
const BUNDLE = { docs: 10_000, tasks: 500, corpus: 1500, seed: 42 };

function readData(name: string): string {
  return readFileSync(fileURLToPath(new URL(name, DATA_DIR)), 'utf8');
}

/** Seeded sample of k items (partial Fisher-Yates). */
function sample<T>(items: readonly T[], k: number, rng: Rng): T[] {
  const copy = [...items];
  for (let i = 0; i < Math.min(k, copy.length); i++) {
    const j = rng.int(i, copy.length - 1);
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, k);
}

describe('createRng', () => {
  it('is deterministic, in range and seed dependent', () => {
    const a = createRng(7);
    const b = createRng(7);
    const xs = Array.from({ length: 1000 }, () => a.next());
    expect(Array.from({ length: 1000 }, () => b.next())).toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    const c = createRng(8);
    expect(Array.from({ length: 10 }, () => c.next())).not.toEqual(xs.slice(0, 10));
    const r = createRng(1);
    const ints = Array.from({ length: 2000 }, () => r.int(3, 5));
    expect(new Set(ints)).toEqual(new Set([3, 4, 5]));
  });
});

describe('generateProgram', () => {
  it('2000 programs all parse, run to their recorded output and respect the limits', () => {
    const rng = createRng(123);
    for (let i = 0; i < 2000; i++) {
      const { source, output } = generateProgram(rng);
      expect(parse(source).ok).toBe(true);
      expect(run(source)).toEqual({ ok: true, output });
      const lines = source.split('\n');
      expect(lines.length).toBeGreaterThanOrEqual(PROGRAM_LIMITS.minLines);
      expect(lines.length).toBeLessThanOrEqual(PROGRAM_LIMITS.maxLines);
      expect(source.length).toBeGreaterThanOrEqual(PROGRAM_LIMITS.minChars);
      expect(source.length).toBeLessThanOrEqual(PROGRAM_LIMITS.maxChars);
      expect(lines[lines.length - 1]).toMatch(/^emit /);
      expect(source).not.toMatch(/\n\s*\n/); // blank lines separate programs in corpus.txt
    }
  });

  it('covers every statement form and built-in', () => {
    const rng = createRng(5);
    const text = Array.from({ length: 500 }, () => generateProgram(rng).source).join('\n');
    for (const word of [
      'let ',
      'set ',
      'emit ',
      'if ',
      ' then ',
      ' else ',
      'repeat ',
      ' and ',
      ' or ',
      'round(',
      'min(',
      'max(',
      'abs(',
      'bps(',
      ' / ',
      '(',
    ]) {
      expect(text).toContain(word);
    }
  });

  it('is deterministic by seed', () => {
    const corpus = (seed: number): string[] => {
      const rng = createRng(seed);
      return Array.from({ length: 200 }, () => generateProgram(rng).source);
    };
    expect(corpus(99)).toEqual(corpus(99));
    expect(corpus(99)).not.toEqual(corpus(100));
    const small = { docs: 50, tasks: 10, corpus: 5, seed: 3 };
    expect(buildDataset(small)).toEqual(buildDataset(small));
    expect(buildDataset(small).train).not.toBe(buildDataset({ ...small, seed: 4 }).train);
  });
});

describe('generateTask', () => {
  it('prompt + answer reproduces expected; the prompt alone does not parse', () => {
    const rng = createRng(11);
    for (let i = 0; i < 300; i++) {
      const t = generateTask(rng);
      expect(t.prompt.endsWith('\nemit ')).toBe(true);
      expect(t.prompt + t.answer).toBe(t.source);
      expect(run(t.prompt + t.answer)).toEqual({ ok: true, output: t.expected });
      expect(parse(t.prompt).ok).toBe(false);
    }
  });
});

describe('random text', () => {
  it('almost never parses (< 1% of seeded printable strings)', () => {
    const rng = createRng(2024);
    let ok = 0;
    const n = 5000;
    for (let i = 0; i < n; i++) {
      const len = rng.int(50, 200);
      let s = '';
      for (let j = 0; j < len; j++) s += rng.chance(0.05) ? '\n' : String.fromCharCode(rng.int(32, 126));
      if (parse(s).ok) ok++;
    }
    expect(ok / n).toBeLessThan(0.01);
  });
});

describe('bundled corpus in examples/data/tally', () => {
  it('train.jsonl: ~10k programs; a seeded sample of 500 parses and runs', () => {
    const lines = readData('train.jsonl').trimEnd().split('\n');
    expect(lines.length).toBe(BUNDLE.docs);
    const docs = lines.map((l) => JSON.parse(l) as { text: string });
    expect(new Set(docs.map((d) => d.text)).size).toBe(docs.length);
    for (const { text } of sample(docs, 500, createRng(1))) {
      const res = run(text);
      expect(res.ok, `${text}\n=> ${res.ok ? '' : res.error}`).toBe(true);
    }
  });

  it('tasks.jsonl: every reference answer earns the expected output', () => {
    const lines = readData('tasks.jsonl').trimEnd().split('\n');
    expect(lines.length).toBe(BUNDLE.tasks);
    for (const line of lines) {
      const t = JSON.parse(line) as { prompt: string; expected: string; answer: string };
      expect(t.prompt.endsWith('emit ')).toBe(true);
      expect(run(t.prompt + t.answer)).toEqual({ ok: true, output: t.expected });
    }
  });

  it('corpus.txt: blank-line separated programs that all run', () => {
    const programs = readData('corpus.txt').trimEnd().split('\n\n');
    expect(programs.length).toBe(BUNDLE.corpus);
    for (const p of programs) expect(run(p).ok).toBe(true);
  });

  it('is byte-identical to a fresh generation with the recorded seed', () => {
    const fresh = buildDataset(BUNDLE);
    expect(readData('train.jsonl') === fresh.train).toBe(true);
    expect(readData('tasks.jsonl') === fresh.tasks).toBe(true);
    expect(readData('corpus.txt') === fresh.corpus).toBe(true);
  });
});

describe('generate CLI', () => {
  it('writes train.jsonl and tasks.jsonl (corpus.txt only on request)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tally-'));
    try {
      main(['--out', dir, '--docs', '20', '--tasks', '5', '--seed', '9']);
      const train = readFileSync(join(dir, 'train.jsonl'), 'utf8').trimEnd().split('\n');
      expect(train).toHaveLength(20);
      expect(Object.keys(JSON.parse(train[0]!) as object)).toEqual(['text']);
      const tasks = readFileSync(join(dir, 'tasks.jsonl'), 'utf8').trimEnd().split('\n');
      expect(tasks).toHaveLength(5);
      expect(Object.keys(JSON.parse(tasks[0]!) as object)).toEqual(['prompt', 'expected', 'answer']);
      expect(existsSync(join(dir, 'corpus.txt'))).toBe(false);
      expect(() => main(['--docs', '3'])).toThrow('--out DIR is required');
      expect(() => main(['--out', dir, '--docs', '2.5'])).toThrow(/--docs must be a non-negative integer/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { RecipeLock } from '../recipe/lock.js';
import { Tokenizer } from '../tokenizer/index.js';
import { Cleaner, type CleanCounts } from './clean.js';
import { readSource, type Rejection } from './sources.js';
import { addTokens } from './vocab.js';

// Two streamed passes with bounded memory: (1) read, clean and split into train/val spools,
// train the tokenizer on the spool's head; (2) encode the spools into uint16 token files.

/** One source's token files. */
export interface PreparedSource {
  name: string;
  weight: number;
  /** The continued pre-training replay data (data.replay), not one of data.sources. */
  replay?: boolean;
  /** Bytes per token id in the token files: 4 for a vocabulary past 65536 ids (an imported model's); else 2. */
  tokenBytes?: 4;
  docs: { train: number; val: number };
  tokens: { train: number; val: number };
  bytes: number;
  train: string;
  val: string;
}

/** What prepareData made: token files per source, the tokenizer, and what cleaning did. */
export interface PreparedData {
  dir: string;
  tokenizerPath: string;
  vocabSize: number;
  /** tokenizer.addTokens added to a base model's tokenizer, with their ids. */
  addedTokens?: { content: string; id: number }[];
  sources: PreparedSource[];
  clean: CleanCounts;
  rejected: number;
  rejections: Rejection[];
  seconds: { read: number; tokenizer: number; encode: number };
}

/** Progress of a preparation phase, for progress bars. */
export interface PrepareProgress {
  phase: 'read' | 'tokenizer' | 'encode';
  source?: string;
  docs?: number;
  bytes?: number;
}

const MAX_KEPT_REJECTIONS = 1000;

/** True when a document goes to the held-out split: decided by content, so it is stable across runs. */
export function isHeldOut(text: string, fraction: number, seed: number): boolean {
  if (fraction <= 0) return false;
  const h = createHash('sha1').update(`${seed}:`).update(text).digest();
  return h.readUInt32LE(0) / 4294967296 < fraction;
}

async function writeChunk(ws: WriteStream, data: string | Uint8Array): Promise<void> {
  if (!ws.write(data)) await new Promise<void>((r) => ws.once('drain', () => r()));
}

async function closeStream(ws: WriteStream): Promise<void> {
  await new Promise<void>((resolve, reject) => ws.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

async function* spoolLines(path: string): AsyncGenerator<string> {
  const rl = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  for await (const line of rl) if (line) yield JSON.parse(line) as string;
}

/**
 * Prepares a locked recipe's data in `dir`: cleaned, split, tokenized. Reuses the results when
 * `dir/prepared.json` exists for the same lock (so resume does not redo it).
 */
export async function prepareData(
  lock: RecipeLock,
  dir: string,
  opts: { onProgress?: (p: PrepareProgress) => void; onNotice?: (m: string) => void } = {},
): Promise<PreparedData> {
  const manifest = join(dir, 'prepared.json');
  const existing = await readFile(manifest, 'utf8')
    .then((s) => JSON.parse(s) as PreparedData & { lock: string })
    .catch(() => undefined);
  if (existing && existing.lock === lock.id) return existing;
  await mkdir(dir, { recursive: true });
  const r = lock.recipe;
  if (r.stage !== 'pretrain')
    throw new Error(`prepareData prepares pre-training text; stage ${r.stage} prepares its rows with src/data/post.ts`);
  const cleaner = new Cleaner(r.data.clean, r.seed);
  const rejections: Rejection[] = [];
  let rejected = 0;
  const t0 = performance.now();
  const spools: {
    name: string;
    weight: number;
    replay?: boolean;
    train: string;
    val: string;
    docs: { train: number; val: number };
    bytes: number;
  }[] = [];
  // Replay (continued pre-training) reads as one more source whose weight gives it its share.
  const replay = r.data.replay;
  const total = r.data.sources.reduce((a, src) => a + src.weight, 0);
  const inputs = [
    ...r.data.sources.map((src, i) => ({ src, i, at: `data.sources[${i}]` })),
    ...(replay
      ? [
          {
            src: { ...replay, weight: (replay.weight / (1 - replay.weight)) * total },
            i: r.data.sources.length,
            at: 'data.replay',
          },
        ]
      : []),
  ];
  for (const { src, i, at } of inputs) {
    const name = lock.data[i]!.source;
    const files = lock.data[i]!.files.map((f) => f.path);
    const s = {
      name,
      weight: src.weight,
      ...(at === 'data.replay' ? { replay: true } : {}),
      train: join(dir, `${i}.train.spool`),
      val: join(dir, `${i}.val.spool`),
      docs: { train: 0, val: 0 },
      bytes: 0,
    };
    const wTrain = createWriteStream(s.train);
    const wVal = createWriteStream(s.val);
    const onReject = (rej: Rejection) => {
      rejected++;
      if (rejections.length < MAX_KEPT_REJECTIONS) rejections.push(rej);
    };
    let n = 0;
    for await (const doc of readSource(src, files, { source: name, onError: r.data.onError, onReject })) {
      const res = cleaner.clean(doc);
      if (!('doc' in res)) continue;
      const text = res.doc.text;
      const held = isHeldOut(text, r.data.valFraction, r.seed);
      await writeChunk(held ? wVal : wTrain, JSON.stringify(text) + '\n');
      if (held) s.docs.val++;
      else s.docs.train++;
      s.bytes += Buffer.byteLength(text);
      if (++n % 5000 === 0) opts.onProgress?.({ phase: 'read', source: name, docs: n, bytes: s.bytes });
    }
    await closeStream(wTrain);
    await closeStream(wVal);
    if (s.docs.train === 0) opts.onNotice?.(`${at} (${name}): no training documents left after cleaning`);
    spools.push(s);
  }
  const t1 = performance.now();

  const tokenizerPath = join(dir, 'tokenizer.json');
  let tokenizer: Tokenizer;
  let addedTokens: PreparedData['addedTokens'];
  if (lock.tokenizer) {
    tokenizer = await Tokenizer.load(lock.tokenizer.path);
    if (r.tokenizer.addTokens) ({ tokenizer, added: addedTokens } = addTokens(tokenizer, r.tokenizer.addTokens));
  } else {
    opts.onProgress?.({ phase: 'tokenizer' });
    const maxBytes = r.tokenizer.maxBytes;
    async function* trainingText(): AsyncGenerator<string> {
      // Interleave sources so a byte budget does not favour the first one.
      const iters = spools.map((s) => spoolLines(s.train)[Symbol.asyncIterator]());
      let used = 0;
      let live = iters.length;
      while (live > 0 && used < maxBytes) {
        live = 0;
        for (const it of iters) {
          const next = await it.next();
          if (next.done) continue;
          live++;
          used += Buffer.byteLength(next.value);
          yield next.value;
        }
      }
      for (const it of iters) await it.return?.(undefined);
    }
    tokenizer = await Tokenizer.train(trainingText(), {
      vocabSize: r.tokenizer.vocabSize,
      minFrequency: r.tokenizer.minFrequency,
    });
  }
  await tokenizer.save(tokenizerPath);
  const t2 = performance.now();

  const sources: PreparedSource[] = [];
  const { bos, eos } = tokenizer.special;
  // uint16 ids hold Lathe's own vocabularies; Llama 3's or Qwen's need uint32.
  const wide = tokenizer.vocabSize > 65536;
  const Ids = wide ? Uint32Array : Uint16Array;
  for (const s of spools) {
    const out: PreparedSource = {
      name: s.name,
      weight: s.weight,
      ...(s.replay ? { replay: true } : {}),
      ...(wide ? { tokenBytes: 4 as const } : {}),
      docs: s.docs,
      bytes: s.bytes,
      tokens: { train: 0, val: 0 },
      train: s.train.replace(/\.spool$/, '.bin'),
      val: s.val.replace(/\.spool$/, '.bin'),
    };
    for (const split of ['train', 'val'] as const) {
      const ws = createWriteStream(out[split]);
      let buf: Uint16Array | Uint32Array = new Ids(1 << 16);
      let len = 0;
      const flush = async () => {
        if (len) await writeChunk(ws, new Uint8Array(buf.buffer, 0, len * buf.BYTES_PER_ELEMENT).slice());
        len = 0;
      };
      let n = 0;
      for await (const text of spoolLines(s[split])) {
        const ids = tokenizer.encode(text);
        if (len + ids.length + 2 > buf.length) {
          await flush();
          if (ids.length + 2 > buf.length) buf = new Ids(ids.length + 2);
        }
        buf[len++] = bos;
        for (const id of ids) buf[len++] = id;
        buf[len++] = eos;
        out.tokens[split] += ids.length + 2;
        if (++n % 5000 === 0) opts.onProgress?.({ phase: 'encode', source: s.name, docs: n });
      }
      await flush();
      await closeStream(ws);
      await rm(s[split]);
    }
    sources.push(out);
  }
  const t3 = performance.now();
  const prepared: PreparedData = {
    dir,
    tokenizerPath,
    vocabSize: tokenizer.vocabSize,
    ...(addedTokens ? { addedTokens } : {}),
    sources,
    clean: cleaner.counts,
    rejected,
    rejections,
    seconds: { read: (t1 - t0) / 1000, tokenizer: (t2 - t1) / 1000, encode: (t3 - t2) / 1000 },
  };
  await writeFile(manifest, JSON.stringify({ ...prepared, lock: lock.id }, null, 1));
  return prepared;
}

/** Size in tokens of a token file (uint16 ids, or uint32 with tokenBytes 4). */
export async function tokenFileLength(path: string, tokenBytes: 2 | 4 = 2): Promise<number> {
  return (await stat(path)).size / tokenBytes;
}

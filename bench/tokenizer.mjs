#!/usr/bin/env node
// Our side of the tokenizer benchmarks, timed in-process on a corpus already in memory.
//   node bench/tokenizer.mjs train  --corpus C.jsonl --vocab 4096 --out tokenizer.json
//   node bench/tokenizer.mjs encode --corpus C.jsonl --tokenizer tokenizer.json
// Prints one JSON line: bytes (UTF-8 of the documents), seconds, MB/s (1 MB = 1e6 bytes) and, for
// encode, the token count and an order-sensitive checksum of the ids (compared with HF's).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { positionals, values: a } = parseArgs({
  allowPositionals: true,
  options: {
    corpus: { type: 'string' },
    vocab: { type: 'string', default: '4096' },
    out: { type: 'string' },
    tokenizer: { type: 'string' },
  },
});
const { Tokenizer } = await import(new URL('../dist/src/tokenizer/index.js', import.meta.url));
const docs = readFileSync(a.corpus, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l));
const bytes = docs.reduce((s, d) => s + Buffer.byteLength(d, 'utf8'), 0);
const peakRssMb = () => Number(readFileSync('/proc/self/status', 'utf8').match(/VmHWM:\s+(\d+) kB/)[1]) / 1024;

if (positionals[0] === 'train') {
  const t0 = performance.now();
  const tok = await Tokenizer.train(docs, { vocabSize: Number(a.vocab), minFrequency: 2 });
  const seconds = (performance.now() - t0) / 1000;
  if (a.out) await tok.save(a.out);
  console.log(
    JSON.stringify({
      bytes,
      docs: docs.length,
      seconds,
      mbPerSecond: bytes / 1e6 / seconds,
      vocabSize: tok.vocabSize,
      peakRssMb: peakRssMb(),
    }),
  );
} else if (positionals[0] === 'encode') {
  const tok = await Tokenizer.load(a.tokenizer);
  const t0 = performance.now();
  let tokens = 0;
  let sum = 0;
  for (const d of docs) {
    const ids = tok.encode(d);
    tokens += ids.length;
    for (let i = 0; i < ids.length; i++) sum = (sum * 31 + ids[i]) % 1000000007;
  }
  const seconds = (performance.now() - t0) / 1000;
  console.log(
    JSON.stringify({
      bytes,
      docs: docs.length,
      seconds,
      mbPerSecond: bytes / 1e6 / seconds,
      tokens,
      checksum: sum,
      peakRssMb: peakRssMb(),
    }),
  );
} else {
  console.error('usage: node bench/tokenizer.mjs train|encode --corpus C.jsonl [--vocab N --out F | --tokenizer F]');
  process.exit(2);
}

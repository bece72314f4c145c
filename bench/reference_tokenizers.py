#!/usr/bin/env python3
"""HF `tokenizers` side of the tokenizer benchmarks: the same corpus, vocabulary size and byte-level
BPE set-up as Lathe (ByteLevel pre-tokenizer without prefix space, the 256-byte initial alphabet,
Lathe's 10 special tokens, min_frequency 2).

  train  --corpus C.jsonl --vocab 4096 [--out tokenizer.json]
  encode --corpus C.jsonl --tokenizer tokenizer.json   (Lathe's trained file; encode_batch)
  merges --ours A.json --theirs B.json                 (how many leading merges agree)

Prints one JSON line. MB/s counts UTF-8 bytes of the documents, 1 MB = 1e6 bytes; the corpus is read
into memory before the clock starts. Set TOKENIZERS_PARALLELISM=false for one thread."""
import argparse
import json
import os
import time

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ['<|bos|>', '<|eos|>', '<|pad|>', '<|system|>', '<|user|>', '<|assistant|>', '<|end|>',
            '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>']


def peak_rss_mb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def read_docs(path):
    with open(path, encoding='utf-8') as f:
        docs = [json.loads(line) for line in f if line.strip()]
    return docs, sum(len(d.encode('utf-8')) for d in docs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('cmd', choices=['train', 'encode', 'merges'])
    ap.add_argument('--corpus')
    ap.add_argument('--vocab', type=int, default=4096)
    ap.add_argument('--out')
    ap.add_argument('--tokenizer')
    ap.add_argument('--ours')
    ap.add_argument('--theirs')
    a = ap.parse_args()
    threads = 1 if os.environ.get('TOKENIZERS_PARALLELISM', '').lower() in ('false', '0') else os.cpu_count()

    if a.cmd == 'merges':
        load = lambda p: json.load(open(p))['model']['merges']
        ours, theirs = load(a.ours), load(a.theirs)
        norm = lambda m: [tuple(x) if isinstance(x, list) else tuple(x.split(' ', 1)) for x in m]
        ours, theirs = norm(ours), norm(theirs)
        same = 0
        for x, y in zip(ours, theirs):
            if x != y:
                break
            same += 1
        print(json.dumps({'ours': len(ours), 'theirs': len(theirs), 'samePrefix': same, 'common': len(set(ours) & set(theirs))}))
        return

    docs, nbytes = read_docs(a.corpus)
    if a.cmd == 'train':
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=a.vocab, min_frequency=2, special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        t0 = time.perf_counter()
        tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
        seconds = time.perf_counter() - t0
        if a.out:
            tok.save(a.out)
        print(json.dumps({'bytes': nbytes, 'docs': len(docs), 'seconds': seconds, 'mbPerSecond': nbytes / 1e6 / seconds,
                          'vocabSize': tok.get_vocab_size(), 'threads': threads, 'peakRssMb': peak_rss_mb()}))
    else:
        tok = Tokenizer.from_file(a.tokenizer)
        t0 = time.perf_counter()
        encs = tok.encode_batch(docs, add_special_tokens=False)
        seconds = time.perf_counter() - t0
        tokens, checksum = 0, 0
        for e in encs:
            ids = e.ids
            tokens += len(ids)
            for i in ids:
                checksum = (checksum * 31 + i) % 1000000007
        print(json.dumps({'bytes': nbytes, 'docs': len(docs), 'seconds': seconds, 'mbPerSecond': nbytes / 1e6 / seconds,
                          'tokens': tokens, 'checksum': checksum, 'threads': threads, 'peakRssMb': peak_rss_mb()}))


if __name__ == '__main__':
    main()

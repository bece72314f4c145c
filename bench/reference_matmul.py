#!/usr/bin/env python3
"""GFLOP/s of an n x n fp32 matmul with numpy (its BLAS) and PyTorch on this machine. Prints one JSON
line: `numpy` and `torch` are medians of --repeats at n (after a warm-up); `best` is the fastest
single product seen at n or at 2n, with either library: the ceiling the MFU column divides by."""
import argparse
import json
import os
import time

ap = argparse.ArgumentParser()
ap.add_argument('--n', type=int, default=1024)
ap.add_argument('--repeats', type=int, default=10)
ap.add_argument('--threads', type=int, default=2)
a = ap.parse_args()
for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(var, str(a.threads))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(a.threads)


def bench(fn, n, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    flop = 2 * n ** 3
    return flop / float(np.median(times)) / 1e9, flop / min(times) / 1e9


rng = np.random.default_rng(0)
out = {'n': a.n, 'threads': a.threads}
best = 0.0
for n, repeats in ((a.n, a.repeats), (2 * a.n, max(2, a.repeats // 4))):
    x = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    y = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    (np_med, np_best), (t_med, t_best) = bench(lambda: x @ y, n, repeats), bench(lambda: tx @ ty, n, repeats)
    if n == a.n:
        out.update(numpy=np_med, torch=t_med)
    else:
        out.update(numpy2n=np_med, torch2n=t_med)
    best = max(best, np_best, t_best)
out.update(best=best, numpyBlas=np.show_config(mode='dicts').get('Build Dependencies', {}).get('blas', {}).get('name', '?'),
           numpyVersion=np.__version__, torchVersion=torch.__version__)
print(json.dumps(out))

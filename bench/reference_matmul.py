#!/usr/bin/env python3
"""GFLOP/s of an n x n fp32 matmul with numpy (its BLAS) and PyTorch on this machine: the ceiling the
MFU column divides by. Median of --repeats after a warm-up; prints one JSON line."""
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


def bench(fn):
    fn()
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 2 * a.n ** 3 / float(np.median(times)) / 1e9


rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (a.n, a.n)).astype(np.float32)
y = rng.uniform(-1, 1, (a.n, a.n)).astype(np.float32)
tx, ty = torch.from_numpy(x), torch.from_numpy(y)
blas = np.show_config(mode='dicts').get('Build Dependencies', {}).get('blas', {}).get('name', '?')
print(json.dumps({'n': a.n, 'threads': a.threads, 'numpy': bench(lambda: x @ y), 'numpyBlas': blas,
                  'torch': bench(lambda: tx @ ty), 'numpyVersion': np.__version__, 'torchVersion': torch.__version__}))

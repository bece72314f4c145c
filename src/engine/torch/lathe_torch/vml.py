"""Settles oneMKL VML's kernel choice before any op runs on several threads.

ATen sends float unary ops (sqrt, exp, log, tanh, ...) on contiguous tensors to MKL VML, one call per
intra-op thread on its chunk. oneMKL 2024.2 (the torch 2.13 CPU wheel's) picks each function's kernel
on its first call, and first calls racing on two threads can run one chunk through a low-accuracy
kernel (pytorch/pytorch#188792): here, one AdamW sqrt in ten fresh processes was off by ~3e-4 on half
the embedding, so two runs of one lock parted at step 2 and bit-exact resume failed. One call per
function and precision on one element, on this thread, before the first parallel op, settles it.
"""

import torch

# The ops whose float kernels ATen routes to VML (aten/src/ATen/cpu/vml.h), and a few neighbours:
# an op that does not go to VML costs one tiny call.
OPS = ('sqrt', 'rsqrt', 'exp', 'expm1', 'log', 'log10', 'log1p', 'log2', 'sin', 'cos', 'tan', 'asin',
       'acos', 'atan', 'sinh', 'cosh', 'tanh', 'erf', 'erfc', 'erfinv', 'sigmoid', 'lgamma', 'reciprocal')


def settle():
    """Calls every op of OPS once on a one-element float32 and float64 tensor (one thread)."""
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)
        for name in OPS:
            getattr(torch, name)(x)

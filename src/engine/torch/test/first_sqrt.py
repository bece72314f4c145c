"""A fresh process's first parallel sqrt, as AdamW's first step meets it, against float64: prints the
largest relative error in each half of the tensor (each of two intra-op threads' chunk).
With --settle, lathe_torch.vml.settle() runs first, as the engine's main does."""

import json
import sys

import torch

from lathe_torch import vml

if '--settle' in sys.argv:
    vml.settle()
torch.manual_seed(0)
a, b = torch.randn(512, 128), torch.randn(128, 128)
(a @ b).sum()  # MKL's BLAS first, as a training step's forward runs before its optimizer
x = torch.rand(320 * 128) + 1e-3
got = torch.sqrt(x)
ref = x.double().sqrt()  # after: its own first call would settle float's kernel too
err = ((got.double() - ref) / ref).abs()
half = err.numel() // 2
print(json.dumps({'threads': torch.get_num_threads(), 'halves': [float(err[:half].max()), float(err[half:].max())]}))

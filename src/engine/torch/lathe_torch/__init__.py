"""Lathe's torch engine: the numerics of a training run in PyTorch, driven by the TypeScript core.

The TS side owns the run (recipe, data, batches, the step loop, metrics, checkpoints); this package
owns tensors: the model, its gradients and optimizer state, the named losses and KV-cached decoding.
It speaks a small framed protocol on stdin/stdout (see protocol.py and src/engine/torch/protocol.ts).
"""

PROTOCOL_VERSION = 2

#!/usr/bin/env python3
"""PyTorch reference for the training benchmarks: the same Llama-style decoder (RMSNorm, RoPE in the
HF rotate_half layout, SwiGLU, GQA, tied embeddings) or Mixtral-style top-k MoE as Lathe's
src/model/, written from the equations, with the same initial weights, batches, AdamW and clipping.

It reads what `node bench/train_step.mjs export` wrote into --dir: spec.json, weights.safetensors
(Lathe's initial weights, HF names, Linear weights [out, in]) and tokens.bin (int32 windows of
context+1 tokens), and trains in fp32 on the CPU.

  --serve     read commands from stdin, one a line: `loss` (the first batch's loss, no update),
              `step` (one optimizer step; prints one JSON line) and `quit` (prints peak RSS and exits). Without it, runs --warmup + --steps steps and
              prints one JSON summary.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def peak_rss_mb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def read_safetensors(path):
    with open(path, 'rb') as f:
        buf = f.read()
    (n,) = struct.unpack('<Q', buf[:8])
    header = json.loads(buf[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == '__metadata__':
            continue
        assert meta['dtype'] == 'F32', f'{name}: {meta["dtype"]}'
        start, end = meta['data_offsets']
        arr = np.frombuffer(buf, dtype=np.float32, count=(end - start) // 4, offset=8 + n + start)
        out[name] = torch.from_numpy(arr.reshape(meta['shape']).copy())
    return out


def rope_tables(max_len, head_dim, theta):
    """cos and sin [max_len, head_dim], rounded exactly as src/engine/tfjs/layers.ts ropeTables does."""
    half = head_dim // 2
    i = np.arange(half, dtype=np.float64)
    inv_freq = (1.0 / np.power(float(theta), 2.0 * i / head_dim)).astype(np.float32)
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    ang = (pos * inv_freq.astype(np.float64)[None, :]).astype(np.float32).astype(np.float64)
    cos = np.cos(ang).astype(np.float32)
    sin = np.sin(ang).astype(np.float32)
    return torch.from_numpy(np.concatenate([cos, cos], 1)), torch.from_numpy(np.concatenate([sin, sin], 1))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    def __init__(self, s, naive):
        super().__init__()
        self.h, self.kvh, self.hd = s['heads'], s['kvHeads'], s['headDim']
        self.q_proj = nn.Linear(s['dim'], self.h * self.hd, bias=False)
        self.k_proj = nn.Linear(s['dim'], self.kvh * self.hd, bias=False)
        self.v_proj = nn.Linear(s['dim'], self.kvh * self.hd, bias=False)
        self.o_proj = nn.Linear(self.h * self.hd, s['dim'], bias=False)
        self.naive = naive

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kvh, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kvh, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.kvh != self.h:  # HF repeat_kv order: head = kv * rep + r
            k = k.repeat_interleave(self.h // self.kvh, dim=1)
            v = v.repeat_interleave(self.h // self.kvh, dim=1)
        if self.naive:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=q.device), 1)
            out = torch.softmax(scores.masked_fill(mask, float('-inf')), -1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.h * self.hd))


class SwiGLU(nn.Module):
    """down(silu(gate x) * up x); attribute names follow HF Llama (dense) or Mixtral (experts)."""

    def __init__(self, dim, ffn, names=('gate_proj', 'up_proj', 'down_proj')):
        super().__init__()
        self.names = names
        setattr(self, names[0], nn.Linear(dim, ffn, bias=False))
        setattr(self, names[1], nn.Linear(dim, ffn, bias=False))
        setattr(self, names[2], nn.Linear(ffn, dim, bias=False))

    def forward(self, x):
        g, u, d = (getattr(self, n) for n in self.names)
        return d(F.silu(g(x)) * u(x))


class MoE(nn.Module):
    """Mixtral routing: softmax over experts, keep the top k, renormalise; each expert sees only its
    tokens. Returns the output and the load-balancing and z losses of src/engine/tfjs/moe.ts."""

    def __init__(self, s):
        super().__init__()
        self.e, self.k = s['experts'], s['topK']
        self.gate = nn.Linear(s['dim'], self.e, bias=False)
        self.experts = nn.ModuleList([SwiGLU(s['dim'], s['ffnDim'], ('w1', 'w3', 'w2')) for _ in range(self.e)])

    def forward(self, x):
        n = x.shape[0]
        logits = self.gate(x)
        probs = torch.softmax(logits, -1)
        top = torch.topk(probs.detach(), self.k, dim=-1).indices
        mask = torch.zeros_like(probs).scatter_(1, top, 1.0)
        kept = probs * mask
        gates = kept / kept.sum(-1, keepdim=True)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows = (top == e).any(-1).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            y = y.index_add(0, rows, (expert(x[rows]) * gates[rows, e:e + 1]).to(y.dtype))
        fraction = mask.sum(0) / (n * self.k)
        balance = self.e * (fraction * probs.mean(0)).sum()
        z = torch.logsumexp(logits, -1).pow(2).mean()
        return y, balance, z


class Block(nn.Module):
    def __init__(self, s, naive):
        super().__init__()
        self.input_layernorm = RMSNorm(s['dim'], s['normEps'])
        self.self_attn = Attention(s, naive)
        self.post_attention_layernorm = RMSNorm(s['dim'], s['normEps'])
        if s['arch'] == 'moe':
            self.block_sparse_moe = MoE(s)
        else:
            self.mlp = SwiGLU(s['dim'], s['ffnDim'])
        self.moe = s['arch'] == 'moe'

    def forward(self, h, cos, sin):
        b, t, d = h.shape
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        x = self.post_attention_layernorm(h)
        if self.moe:
            y, balance, z = self.block_sparse_moe(x.reshape(b * t, d))
            return h + y.view(b, t, d), balance, z
        return h + self.mlp(x), None, None


class Trunk(nn.Module):
    def __init__(self, s, naive):
        super().__init__()
        self.embed_tokens = nn.Embedding(s['vocabSize'], s['dim'])
        self.layers = nn.ModuleList([Block(s, naive) for _ in range(s['layers'])])
        self.norm = RMSNorm(s['dim'], s['normEps'])


class LanguageModel(nn.Module):
    def __init__(self, s, naive=False):
        super().__init__()
        assert s['tieEmbeddings'], 'the benchmark models tie the head to the embedding'
        self.s = s
        self.model = Trunk(s, naive)
        cos, sin = rope_tables(s['context'], s['headDim'], s['ropeTheta'])
        self.register_buffer('cos', cos, persistent=False)
        self.register_buffer('sin', sin, persistent=False)

    def loss(self, ids, targets):
        """Mean cross-entropy plus the MoE auxiliary terms (mean over layers), as src/engine/tfjs/losses.ts."""
        t = ids.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        h = self.model.embed_tokens(ids)
        balances, zs = [], []
        for layer in self.model.layers:
            h, balance, z = layer(h, cos, sin)
            if balance is not None:
                balances.append(balance)
                zs.append(z)
        h = self.model.norm(h)
        logits = h.reshape(-1, h.shape[-1]) @ self.model.embed_tokens.weight.t()
        ce = F.cross_entropy(logits, targets.reshape(-1))
        total = ce
        if balances:
            total = ce + self.s['auxLossCoef'] * torch.stack(balances).mean() + self.s['zLossCoef'] * torch.stack(zs).mean()
        return total, ce


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dir', required=True)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--micro', type=int, default=0, help='micro-batch (gradient accumulation); 0 = the whole batch')
    ap.add_argument('--check-micro', type=int, default=0,
                    help='micro-batch of the `loss` command (match Lathe\'s: the MoE balance loss is per micro-batch); 0 = --micro')
    ap.add_argument('--attn', choices=['sdpa', 'naive'], default='sdpa')
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--serve', action='store_true')
    ap.add_argument('--device', default='cpu', help='cpu or cuda (bench/gpu_check.sh)')
    ap.add_argument('--dtype', choices=['fp32', 'bf16'], default='fp32', help='bf16: autocast, fp32 master weights')
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    device = torch.device(a.device)
    autocast = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=a.dtype == 'bf16')
    sync = (lambda: torch.cuda.synchronize()) if device.type == 'cuda' else (lambda: None)
    cfg = json.load(open(os.path.join(a.dir, 'spec.json')))
    s, tr = cfg['spec'], cfg['train']
    seq, batch = cfg['seq'], tr['batch']
    micro = a.micro or batch
    assert batch % micro == 0
    accum = batch // micro

    model = LanguageModel(s, naive=a.attn == 'naive')
    weights = read_safetensors(os.path.join(a.dir, 'weights.safetensors'))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    model.to(device)
    toks = np.fromfile(os.path.join(a.dir, 'tokens.bin'), dtype=np.int32).reshape(-1, batch, seq + 1)
    toks = torch.from_numpy(toks.astype(np.int64)).to(device)

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{'params': decay, 'weight_decay': tr['weightDecay']}, {'params': no_decay, 'weight_decay': 0.0}],
        lr=tr['lr'], betas=(tr['beta1'], tr['beta2']), eps=tr['eps'], fused=device.type == 'cuda')
    params = list(model.parameters())

    def step(i):
        window = toks[i % toks.shape[0]]
        opt.zero_grad(set_to_none=True)
        total_sum, ce_sum = 0.0, 0.0
        for m in range(accum):
            w = window[m * micro:(m + 1) * micro]
            with autocast():
                total, ce = model.loss(w[:, :-1], w[:, 1:])
            (total / accum).backward()
            total_sum += total.item()
            ce_sum += ce.item()
        # Global-norm clipping exactly as Lathe: scale by clip/norm only when norm > clip.
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).item()
        if tr['gradClip'] > 0 and norm > tr['gradClip']:
            c = tr['gradClip'] / norm
            for p in params:
                p.grad.mul_(c)
        opt.step()
        return {'loss': total_sum / accum, 'ce': ce_sum / accum, 'gradNorm': norm}

    def forward_loss(i):
        """Loss of batch i without an update (mean over micro-batches): the same-model check."""
        window = toks[i % toks.shape[0]]
        mb = a.check_micro or micro
        with torch.no_grad(), autocast():
            return sum(model.loss(window[m * mb:(m + 1) * mb, :-1], window[m * mb:(m + 1) * mb, 1:])[0].item()
                       for m in range(batch // mb)) / (batch // mb)

    info = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'microBatch': micro, 'batch': batch,
            'params': sum(p.numel() for p in params), 'attn': a.attn, 'device': a.device, 'dtype': a.dtype}
    i = 0

    def timed():
        nonlocal i
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        r = step(i)
        sync()
        i += 1
        r.update(step=i, seconds=time.perf_counter() - t0, cpuSeconds=time.process_time() - c0)
        return r

    if a.serve:
        print(json.dumps({'ready': True, **info}), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == 'step':
                print(json.dumps(timed()), flush=True)
            elif cmd == 'loss':
                print(json.dumps({'initialLoss': forward_loss(0)}), flush=True)
            elif cmd == 'quit':
                break
        print(json.dumps({'peakRssMb': peak_rss_mb(), **info}), flush=True)
        return
    rs = [timed() for _ in range(a.warmup + a.steps)]
    times = sorted(r['seconds'] for r in rs[a.warmup:])
    med = float(np.median(times))
    print(json.dumps({**info, 'losses': [r['loss'] for r in rs], 'stepSeconds': [r['seconds'] for r in rs[a.warmup:]],
                      'medianStepSeconds': med, 'tokensPerSecond': batch * seq / med, 'peakRssMb': peak_rss_mb()}))


if __name__ == '__main__':
    main()

"""Lathe's decoder in PyTorch, parameter for parameter the tfjs engine's (src/engine/tfjs/model.ts):
Llama-style dense (RMSNorm, RoPE in the HF rotate_half layout, SwiGLU, GQA) or Mixtral-style top-k
MoE, with HF parameter names, so checkpoints load in either engine and export as they are."""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as activation_checkpoint


def rope_inv_freq(head_dim, theta, scaling=None):
    """RoPE's inverse frequencies in fp32, step by step as src/model/rope.ts (transformers' default,
    linear and llama3 rope types)."""
    f = np.float32
    half = head_dim // 2
    i = np.arange(half, dtype=np.float64)
    inv = (1.0 / np.power(float(theta), 2.0 * i / head_dim)).astype(np.float32)
    if not scaling:
        return inv
    if scaling['type'] == 'linear':
        return (inv / f(scaling['factor'])).astype(np.float32)
    factor, low, high, old = (f(scaling['factor']), f(scaling['lowFreqFactor']), f(scaling['highFreqFactor']),
                              f(scaling['originalContext']))
    low_wavelen = float(scaling['originalContext']) / scaling['lowFreqFactor']
    high_wavelen = float(scaling['originalContext']) / scaling['highFreqFactor']
    wavelen = f(2 * math.pi) / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv).astype(np.float32)
    smooth = ((old / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = ((f(1) - smooth) * scaled / factor + smooth * scaled).astype(np.float32)
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_tables(max_len, head_dim, theta, scaling=None):
    """cos and sin [max_len, head_dim], rounded as src/engine/tfjs/layers.ts ropeTables does (fp32
    inverse frequencies, the angle rounded to fp32, cos/sin in fp64 then fp32)."""
    inv_freq = rope_inv_freq(head_dim, theta, scaling)
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
        # In fp32 under bf16 autocast: the mean of squares is where low precision hurts.
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    def __init__(self, s, window=None):
        super().__init__()
        self.h, self.kvh, self.hd = s['heads'], s['kvHeads'], s['headDim']
        bias = s.get('attentionBias')  # 'qkv' (Qwen2) or 'all' (attention_bias); absent: none
        self.q_proj = nn.Linear(s['dim'], self.h * self.hd, bias=bool(bias))
        self.k_proj = nn.Linear(s['dim'], self.kvh * self.hd, bias=bool(bias))
        self.v_proj = nn.Linear(s['dim'], self.kvh * self.hd, bias=bool(bias))
        self.o_proj = nn.Linear(self.h * self.hd, s['dim'], bias=bias == 'all')
        if s.get('qkNorm'):  # Qwen3: RMSNorm over each head of q and k, before RoPE
            self.q_norm = RMSNorm(self.hd, s['normEps'])
            self.k_norm = RMSNorm(self.hd, s['normEps'])
        self.qk_norm = bool(s.get('qkNorm'))
        self.window = window

    def forward(self, x, cos, sin, cache=None):
        """x [B, T, D]; cos/sin sliced to the T positions. With a cache dict, keys and values of earlier
        positions are reused and the new ones appended (decoding); with a RowCache, one token per row at
        each row's own position (continuous batching). With a window, each position sees itself and the
        window - 1 before it."""
        if isinstance(cache, RowCache):
            return self.forward_rows(x, cos, sin, cache)
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd)
        k = self.k_proj(x).view(b, t, self.kvh, self.hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kvh, self.hd).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        causal = True
        if cache is not None:
            if 'k' in cache:
                k = torch.cat([cache['k'], k], 2)
                v = torch.cat([cache['v'], v], 2)
                causal = t > 1
            cache['k'], cache['v'] = k, v
        if self.kvh != self.h:  # HF repeat_kv order: head = kv * rep + r
            k = k.repeat_interleave(self.h // self.kvh, dim=1)
            v = v.repeat_interleave(self.h // self.kvh, dim=1)
        s = k.shape[2]
        if self.window is not None and s > self.window:
            # Query i (at position s - t + i) sees keys j with s - t + i - window < j <= s - t + i.
            ones = torch.ones(t, s, dtype=torch.bool, device=x.device)
            mask = ones.tril(s - t) & ones.triu(s - t - self.window + 1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif causal and s != t:
            # Several new queries after a cached prefix: query i sees keys up to s - t + i.
            mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(s - t)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal and t > 1)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.h * self.hd))


    def forward_rows(self, x, cos, sin, c):
        """x [B, 1, D], cos/sin [B, 1, 1, hd] at each row's position: writes the new key and value into each
        row's slot at its position, then attends over keys 0..pos of that row (a mask hides the rest; with a
        window, also keys window or more positions back)."""
        b = x.shape[0]
        q = self.q_proj(x).view(b, 1, self.h, self.hd)
        k = self.k_proj(x).view(b, 1, self.kvh, self.hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(b, 1, self.kvh, self.hd).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        c.k[c.slots, :, c.pos] = k[:, :, 0].to(c.k.dtype)
        c.v[c.slots, :, c.pos] = v[:, :, 0].to(c.v.dtype)
        keys = c.k[c.slots, :, :c.length].to(q.dtype)
        values = c.v[c.slots, :, :c.length].to(q.dtype)
        if self.kvh != self.h:
            keys = keys.repeat_interleave(self.h // self.kvh, dim=1)
            values = values.repeat_interleave(self.h // self.kvh, dim=1)
        at = torch.arange(c.length, device=x.device)[None, :]
        seen = at <= c.pos[:, None]
        if self.window is not None:  # a sliding window: the new token sees itself and window - 1 before it
            seen = seen & (at > c.pos[:, None] - self.window)
        mask = seen[:, None, None, :]
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, 1, self.h * self.hd))


class RowCache:
    """One layer's view of a batch decoder's slots for one step: key and value buffers [slots, kvHeads,
    context, hd], the slot of each row, each row's position, and the longest row's length."""

    def __init__(self, k, v, slots, pos, length):
        self.k, self.v, self.slots, self.pos, self.length = k, v, slots, pos, length


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
    """Mixtral routing: softmax over experts, keep the top k, renormalise (unless normTopK is false,
    as Qwen3-MoE without norm_topk_prob). Each expert runs on the rows routed to it (an indexed
    product per expert, never a loop over tokens). Returns the output, the load-balancing and z
    losses, and the routed fraction per expert, as src/engine/tfjs/moe.ts."""

    def __init__(self, s, names=('w1', 'w3', 'w2')):
        super().__init__()
        self.e, self.k = s['experts'], s['topK']
        self.renormalise = s.get('normTopK', True)
        self.gate = nn.Linear(s['dim'], self.e, bias=False)
        self.experts = nn.ModuleList([SwiGLU(s['dim'], s['ffnDim'], names) for _ in range(self.e)])

    def forward(self, x):
        n = x.shape[0]
        logits = self.gate(x).float()
        probs = torch.softmax(logits, -1)
        top = torch.topk(probs.detach(), self.k, dim=-1).indices
        mask = torch.zeros_like(probs).scatter_(1, top, 1.0)
        kept = probs * mask
        gates = kept / kept.sum(-1, keepdim=True) if self.renormalise else kept
        y = torch.zeros_like(x)
        # Rows per expert in one sort: no host sync per expert beyond the counts.
        flat = top.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=self.e).tolist()
        rows_all = torch.div(order, self.k, rounding_mode='floor')
        start = 0
        for e, c in enumerate(counts):
            if c == 0:
                continue
            rows = rows_all[start:start + c]
            start += c
            out = self.experts[e](x[rows]) * gates[rows, e:e + 1].to(x.dtype)
            y = y.index_add(0, rows, out)
        fraction = mask.sum(0) / (n * self.k)
        balance = self.e * (fraction * probs.mean(0)).sum()
        z = torch.logsumexp(logits, -1).pow(2).mean()
        return y, balance, z, fraction


def windowed(s, i):
    """Whether layer i attends through the sliding window (src/model/spec.ts windowed)."""
    return s.get('slidingWindow') is not None and (s.get('windowLayers') is None or i in s['windowLayers'])


class Block(nn.Module):
    def __init__(self, s, i=0):
        super().__init__()
        self.input_layernorm = RMSNorm(s['dim'], s['normEps'])
        self.self_attn = Attention(s, s['slidingWindow'] if windowed(s, i) else None)
        self.post_attention_layernorm = RMSNorm(s['dim'], s['normEps'])
        self.moe = s['arch'] == 'moe' and i not in (s.get('denseLayers') or [])
        # HF names: Mixtral's block_sparse_moe with w1/w3/w2, Qwen3-MoE's mlp with gate/up/down_proj.
        qwen = s.get('family') == 'qwen3_moe'
        self.moe_name = 'mlp' if qwen else 'block_sparse_moe'
        if self.moe:
            setattr(self, self.moe_name, MoE(s, ('gate_proj', 'up_proj', 'down_proj') if qwen else ('w1', 'w3', 'w2')))
        else:
            self.mlp = SwiGLU(s['dim'], (s.get('denseFfnDim') or s['ffnDim']) if s['arch'] == 'moe' else s['ffnDim'])

    def forward(self, h, cos, sin, cache=None):
        b, t, d = h.shape
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, cache)
        x = self.post_attention_layernorm(h)
        if self.moe:
            y, balance, z, util = getattr(self, self.moe_name)(x.reshape(b * t, d))
            return h + y.view(b, t, d), (balance, z, util)
        return h + self.mlp(x), None


class Trunk(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.embed_tokens = nn.Embedding(s['vocabSize'], s['dim'])
        self.layers = nn.ModuleList([Block(s, i) for i in range(s['layers'])])
        self.norm = RMSNorm(s['dim'], s['normEps'])


class LanguageModel(nn.Module):
    """Parameters are named as HF's: model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight,
    ..., lm_head.weight (untied only)."""

    def __init__(self, s):
        super().__init__()
        self.s = s
        self.model = Trunk(s)
        if not s['tieEmbeddings']:
            self.lm_head = nn.Linear(s['dim'], s['vocabSize'], bias=False)
        cos, sin = rope_tables(s['context'], s['headDim'], s['ropeTheta'], s.get('ropeScaling'))
        self.register_buffer('cos', cos, persistent=False)
        self.register_buffer('sin', sin, persistent=False)
        self.checkpoint_activations = False

    def head(self):
        return self.model.embed_tokens.weight if self.s['tieEmbeddings'] else self.lm_head.weight

    def forward_rows(self, ids, pos, caches):
        """One token per row, ids [B, 1], each at its own position pos [B] (long), with one RowCache per
        layer: next-token logits [B, V] (fp32)."""
        cos, sin = self.cos[pos][:, None, None, :], self.sin[pos][:, None, None, :]
        h = self.model.embed_tokens(ids)
        for layer, c in zip(self.model.layers, caches):
            h, _ = layer(h, cos, sin, c)
        h = self.model.norm(h)
        return F.linear(h.reshape(-1, h.shape[-1]), self.head().to(h.dtype)).float()

    def forward(self, ids, pos0=0, cache=None):
        """Logits [B*T, V] (fp32) and the router statistics of each MoE layer."""
        t = ids.shape[1]
        cos, sin = self.cos[pos0:pos0 + t], self.sin[pos0:pos0 + t]
        h = self.model.embed_tokens(ids)
        routers = []
        for i, layer in enumerate(self.model.layers):
            c = cache[i] if cache is not None else None
            if self.checkpoint_activations and self.training and c is None:
                h, r = activation_checkpoint(layer, h, cos, sin, use_reentrant=False)
            else:
                h, r = layer(h, cos, sin, c)
            if r is not None:
                routers.append(r)
        h = self.model.norm(h)
        logits = F.linear(h.reshape(-1, h.shape[-1]), self.head().to(h.dtype))
        return logits.float(), routers

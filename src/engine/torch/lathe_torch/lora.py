"""LoRA on the torch engine (the formula: src/model/lora.ts), applied to the model from outside: each
targeted nn.Linear is replaced by a LoraLinear that keeps the original as `base_layer` (PEFT's layout)
and adds (alpha / r) * B(A(dropout(x))). The model code is untouched.

QLoRA: before the adapters go on, the decoder blocks' projections can be replaced by frozen quantized
ones: Int8Linear (int8 rows with a float32 scale each, any device) or bitsandbytes' NF4 Linear4bit
(CUDA only). Both dequantize W per product, and again in the backward pass, so no float copy of the
base lives between products."""
import re

import torch
import torch.nn as nn

PROJECTION = re.compile(r'^model\.layers\.\d+\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|w1|w2|w3)$')
BNB_VERSION = '0.50.2'


class LoraError(Exception):
    """A LoRA or quantization setting this engine cannot serve (raised as the engine's user error)."""


class _Int8MatMul(torch.autograd.Function):
    """x W^T with W = q * scale made in the forward pass and again in the backward pass (dx only)."""

    @staticmethod
    def forward(ctx, x, q, scale):
        ctx.save_for_backward(q, scale)
        ctx.dtype = x.dtype
        w = q.to(x.dtype) * scale.to(x.dtype)[:, None]
        return x @ w.t()

    @staticmethod
    def backward(ctx, g):
        q, scale = ctx.saved_tensors
        w = q.to(g.dtype) * scale.to(g.dtype)[:, None]
        return (g @ w).to(ctx.dtype), None, None


class Int8Linear(nn.Module):
    """A frozen Linear held as int8 per output row (symmetric, scale = max|row| / 127), as
    src/model/quantize.ts quantizes."""

    def __init__(self, lin):
        super().__init__()
        w = lin.weight.detach().float()
        scale = (w.abs().amax(1) / 127).float()
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        # The quotient in float64, as the TS side computes it, so both engines round alike.
        x = w.double() / safe.double()[:, None]
        q = (torch.sign(x) * torch.floor(x.abs() + 0.5)).clamp(-127, 127).to(torch.int8)
        self.register_buffer('q', q)
        self.register_buffer('scale', scale)
        self.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = lin.in_features, lin.out_features

    def forward(self, x):
        y = _Int8MatMul.apply(x, self.q, self.scale)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def dequantized(self):
        return self.q.float() * self.scale[:, None]

    def held_bytes(self):
        return self.q.numel() + self.scale.numel() * 4


def _bnb():
    try:
        import bitsandbytes as bnb  # noqa: PLC0415 (optional: CUDA machines only)
    except ImportError as e:
        raise LoraError(
            f'train.lora.quantize nf4: bitsandbytes is not installed for this Python ({e}); '
            f'on a CUDA machine: .venv/bin/pip install bitsandbytes=={BNB_VERSION}') from e
    return bnb


def nf4_linear(lin, device, compute_dtype):
    """bitsandbytes' Linear4bit (NF4) from a float Linear; quantized as it moves to the CUDA device."""
    if device.type != 'cuda':
        raise LoraError('train.lora.quantize nf4: NF4 (bitsandbytes) runs on CUDA only; use --device cuda, or quantize int8 on the CPU')
    bnb = _bnb()
    m = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                          compute_dtype=compute_dtype, quant_type='nf4')
    m.weight = bnb.nn.Params4bit(lin.weight.detach().cpu().float(), requires_grad=False, quant_type='nf4')
    if lin.bias is not None:
        m.bias = nn.Parameter(lin.bias.detach().cpu().float(), requires_grad=False)
    return m.to(device)


def _is_nf4(m):
    return type(m).__name__ == 'Linear4bit'


def _dequantize(m):
    """The float32 weight of a frozen projection, however it is held."""
    if isinstance(m, Int8Linear):
        return m.dequantized()
    if _is_nf4(m):
        bnb = _bnb()
        return bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state).float()
    return m.weight.detach().float()


def _held(m):
    if isinstance(m, Int8Linear):
        return m.held_bytes()
    if _is_nf4(m):
        qs = m.weight.quant_state
        extra = sum(t.numel() * t.element_size() for t in (getattr(qs, 'absmax', None), getattr(qs, 'code', None))
                    if isinstance(t, torch.Tensor))
        return m.weight.numel() * m.weight.element_size() + extra
    return m.weight.numel() * m.weight.element_size()


def _replace(model, path, new):
    parent, _, attr = path.rpartition('.')
    setattr(model.get_submodule(parent), attr, new)


def quantize_base(model, scheme, device, compute_dtype):
    """Replaces every projection of the decoder blocks by a frozen int8 or NF4 one."""
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Linear) and PROJECTION.match(name):
            _replace(model, name, Int8Linear(m) if scheme == 'int8' else nf4_linear(m, device, compute_dtype))


class LoraLinear(nn.Module):
    """base_layer(x) + (alpha / r) * lora_B(lora_A(dropout(x))); dropout masks come from `seed`."""

    def __init__(self, base, rank, alpha, dropout):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        self.scale = alpha / rank
        self.p = dropout
        self.enabled = True
        self.seed = None

    def forward(self, x):
        y = self.base_layer(x)
        if not self.enabled:
            return y
        if self.training and self.p > 0 and self.seed is not None:
            g = torch.Generator(device=x.device)
            g.manual_seed(self.seed)
            keep = torch.rand(x.shape, generator=g, device=x.device) >= self.p
            x = x * keep.to(x.dtype) / (1 - self.p)
        return y + self.lora_B(self.lora_A(x)) * self.scale


class Lora:
    """The adapters of one model: wraps the targeted modules, and answers for them."""

    def __init__(self, model, cfg, adapters, device):
        self.model = model
        self.cfg = cfg
        self.seed = int(cfg['seed'])
        self.modules = []
        for path in cfg['modules']:
            base = model.get_submodule(path)
            lin = LoraLinear(base, int(cfg['rank']), float(cfg['alpha']), float(cfg['dropout'])).to(device)
            for part in ('lora_A', 'lora_B'):
                name = f'{path}.{part}.weight'
                if name not in adapters:
                    raise LoraError(f'LoRA adapter {name} is missing')
                w = getattr(lin, part).weight
                if tuple(adapters[name].shape) != tuple(w.shape):
                    raise LoraError(f'LoRA adapter {name}: shape {list(adapters[name].shape)} is not {list(w.shape)}')
                with torch.no_grad():
                    w.copy_(adapters[name].to(device))
            _replace(model, path, lin)
            self.modules.append((path, lin))
        for n, p in model.named_parameters():
            p.requires_grad_('.lora_A.' in n or '.lora_B.' in n)

    def params(self):
        """(name, parameter) of every adapter, in module order."""
        return [(f'{path}.{part}.weight', getattr(m, part).weight) for path, m in self.modules for part in ('lora_A', 'lora_B')]

    def set_enabled(self, on):
        for _, m in self.modules:
            m.enabled = on

    def set_dropout(self, step, micro):
        """Seeds the dropout masks of the next forward pass by (seed, optimizer step, micro-batch, module)."""
        for i, (_, m) in enumerate(self.modules):
            m.seed = (((self.seed * 1_000_003 + step) * 1_000_033 + micro) * 10_007 + i) % (2 ** 63)

    def adapters(self):
        return {n: p.detach().float().cpu().contiguous() for n, p in self.params()}

    def weights(self, merge=True):
        """The model's weights by HF name, float32: quantized projections dequantized, adapters merged in."""
        out = {}
        for n, p in self.model.named_parameters():
            if '.lora_A.' in n or '.lora_B.' in n or type(p).__name__ == 'Params4bit':
                continue
            out[n.replace('.base_layer.', '.')] = p.detach().float().cpu()
        for name, m in self.model.named_modules():
            if isinstance(m, Int8Linear) or _is_nf4(m):
                out[name.replace('.base_layer', '') + '.weight'] = _dequantize(m).cpu()
        if merge:
            for path, m in self.modules:
                a = m.lora_A.weight.detach().double().cpu()
                b = m.lora_B.weight.detach().double().cpu()
                w = out[path + '.weight'].double()
                out[path + '.weight'] = w + m.scale * (b @ a)
        return {k: v.float().contiguous() for k, v in out.items()}

    def held_bytes(self):
        """Bytes of the frozen base as held (float, int8 or NF4) and of the adapters."""
        base = 0
        seen = set()
        for name, m in self.model.named_modules():
            if isinstance(m, Int8Linear) or _is_nf4(m):
                base += _held(m)
                seen.update(id(p) for p in m.parameters(recurse=False) if type(p).__name__ == 'Params4bit')
        for n, p in self.model.named_parameters():
            if id(p) in seen or '.lora_A.' in n or '.lora_B.' in n:
                continue
            base += p.numel() * p.element_size()
        adapters = sum(p.numel() * p.element_size() for _, p in self.params())
        return base, adapters


def check_quantize(scheme, device):
    """Refuses a quantization this device cannot run, before any weight moves."""
    if scheme == 'nf4':
        if device.type != 'cuda':
            raise LoraError('train.lora.quantize nf4: NF4 (bitsandbytes) runs on CUDA only; use --device cuda, or quantize int8 on the CPU')
        _bnb()
    elif scheme not in ('none', 'int8'):
        raise LoraError(f'train.lora.quantize: unknown scheme {scheme!r}')


"""The engine: a model on a device with its optimizer, the named losses, decoding with a KV cache,
a frozen reference, and checkpoints in Lathe's format (model.safetensors with HF names, fp32, and
optimizer.safetensors with m.<name> / v.<name>). With LoRA (lora.py) the model is a frozen base,
only the adapters train, and checkpoints hold adapter.safetensors instead of the model."""
import copy
import os
import shutil
import time

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from . import parallel
from .losses import LOSSES, sequence_logprobs, token_logprobs
from .errors import EngineError
from .lora import Lora, LoraError, check_quantize, quantize_base
from .model import LanguageModel, RowCache
from .weights import load_weights


class Engine:
    def __init__(self, spec, weights, device='cpu', dtype='fp32', optimizer=None, state=None,
                 checkpoint_activations=False, compile=False, world=None, lora=None, adapters=None):
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise EngineError('device cuda: torch.cuda.is_available() is false (a CPU build of torch, or no GPU)')
        # On several ranks: parallel.World; the model is replicated (DDP) or sharded (FSDP2), and
        # only rank 0 holds `weights` and `state` (the others receive them through torch.distributed).
        self.world = world
        self.device = world.device(torch.device(device).type) if world else torch.device(device)
        self.bf16 = dtype == 'bf16'
        if self.bf16 and self.device.type == 'cpu' and not torch.backends.mkldnn.is_available():
            raise EngineError('dtype bf16: this CPU build of torch has no oneDNN (mkldnn) for bf16 matmuls')
        self.spec = spec
        self.model = LanguageModel(spec).to(self.device)
        self.model.checkpoint_activations = bool(checkpoint_activations)
        if world is None:
            load_weights(self.model, weights)
            self.step_fn = self.model
        else:
            if lora is not None:
                raise EngineError('train.lora: LoRA adapters train in one process; drop resources.gpus/nodes '
                                  '(or train all weights on several ranks)')
            self.step_fn = parallel.wrap(self.model, spec, world, weights)
        self.lora = None
        if lora is not None:
            try:
                scheme = lora.get('quantize', 'none')
                check_quantize(scheme, self.device)
                if scheme != 'none':
                    quantize_base(self.model, scheme, self.device, torch.bfloat16 if self.bf16 else torch.float32)
                self.lora = Lora(self.model, lora, adapters or {}, self.device)
            except LoraError as e:
                raise EngineError(str(e)) from e
        trained = self.lora.params() if self.lora else list(self.model.named_parameters())
        self.names = {p: n for n, p in trained}
        self.params = [p for _, p in trained]
        self.reference = None
        self.sessions = {}
        self.next_session = 1
        self.decoders = {}
        self.micro = 0
        self.steps = 0
        self.compile_seconds = 0.0
        self.stats = {'tokens': 0, 'seconds': 0.0}
        if compile:
            t0 = time.perf_counter()
            self.step_fn = torch.compile(self.step_fn)
            self.compile_seconds = time.perf_counter() - t0
        self.opt = None
        if optimizer is not None:
            self.clip = optimizer['gradClip']
            # Adapters all decay (as PEFT's trainer decays them); a whole model: matrices, not norm gains.
            decay = [p for p in self.params if p.ndim >= 2]
            no_decay = [p for p in self.params if p.ndim < 2]
            fused = self.device.type == 'cuda'
            self.opt = torch.optim.AdamW(
                [{'params': decay, 'weight_decay': optimizer['weightDecay']},
                 {'params': no_decay, 'weight_decay': 0.0}],
                lr=0.0, betas=(optimizer['beta1'], optimizer['beta2']), eps=optimizer['eps'],
                fused=fused, foreach=None if fused else True)
            self.init_optimizer_state(state)

    # ---- weights ----

    def weights(self):
        """The full weights (on several ranks: gathered on rank 0; the others get {}; with LoRA merged)."""
        if self.world is not None:
            return parallel.full_weights(self.model, self.world)
        if self.lora:
            return self.lora.weights(merge=True)
        return {n: p.detach().float().cpu().contiguous() for n, p in self.model.named_parameters()}

    def adapters(self):
        return self.lora.adapters() if self.lora else None

    def memory(self):
        """Bytes held: the model's weights (with LoRA the frozen base as held), adapters, optimizer
        moments, and what the device holds now (CUDA: allocated; CPU: the tensors above)."""
        if self.lora:
            base, adapters = self.lora.held_bytes()
        else:
            base = sum(p.numel() * p.element_size() for p in self.model.parameters())
            adapters = 0
        opt = 0
        if self.opt is not None:
            for st in self.opt.state.values():
                opt += sum(t.numel() * t.element_size() for k, t in st.items() if k != 'step')
        device = torch.cuda.memory_allocated(self.device) if self.device.type == 'cuda' else base + adapters + opt
        return {'weights': base, 'adapters': adapters, 'optimizer': opt, 'device': device}

    def init_optimizer_state(self, state):
        """Moments for every parameter up front (zeros, or a checkpoint's), and one global step count:
        Lathe's AdamW corrects bias by the optimizer's step, also for an expert that sat out steps."""
        fused = self.device.type == 'cuda'
        self.steps = int(state['step']) if state else 0
        for p in self.params:
            name = self.names[p]
            if self.world is not None:
                    m, v = parallel.moments(p, name, state, self.world)
            else:
                m = state['m'][name].to(self.device) if state else torch.zeros_like(p)
                v = state['v'][name].to(self.device) if state else torch.zeros_like(p)
            if tuple(m.shape) != tuple(p.shape) or tuple(v.shape) != tuple(p.shape):
                raise EngineError(f'optimizer state of {name}: shape {list(m.shape)} does not match {list(p.shape)}')
            self.opt.state[p] = {
                'step': torch.tensor(float(self.steps), dtype=torch.float32, device=p.device if fused else 'cpu'),
                'exp_avg': m.clone(),
                'exp_avg_sq': v.clone(),
            }

    def optimizer_state(self):
        if self.opt is None:
            return None
        m, v = {}, {}
        full = (lambda t: t.float().cpu().contiguous())
        if self.world is not None:
            full = (lambda t: parallel.full_tensor(t, self.world))
        for p in self.params:
            st = self.opt.state[p]
            m[self.names[p]] = full(st['exp_avg'])
            v[self.names[p]] = full(st['exp_avg_sq'])
        return m, v, self.steps

    def save(self, folder):
        if self.lora:
            st = self.optimizer_state()
            save_file(self.lora.adapters(), os.path.join(folder, 'adapter.safetensors'), metadata={'format': 'pt'})
            self.save_optimizer(folder, st)
            return
        if self.world is not None and parallel.shared_folder(self.world, folder):
            # Sharded through torch.distributed.checkpoint, then converted to Lathe's format.
            w, m, v = parallel.save_sharded(self.params, self.names, self.opt.state if self.opt else None,
                                            self.world, folder)
            st = (m, v, self.steps) if m is not None else None
        else:
            w = self.weights()
            st = self.optimizer_state()
        if self.world is not None and not self.world.leader:
            return
        save_file(w, os.path.join(folder, 'model.safetensors'), metadata={'format': 'pt'})
        self.save_optimizer(folder, st)
        # The checkpoint is Lathe's files (any world size, either engine); the shards were the way there.
        shutil.rmtree(os.path.join(folder, 'dcp'), ignore_errors=True)

    @staticmethod
    def save_optimizer(folder, st):
        if st is not None:
            m, v, _ = st
            both = {f'm.{k}': t for k, t in m.items()}
            both.update({f'v.{k}': t for k, t in v.items()})
            save_file(both, os.path.join(folder, 'optimizer.safetensors'))

    def set_reference(self, weights, base=False):
        if base:
            if self.lora is None:
                raise EngineError("setReference('base') needs LoRA adapters to switch off; this engine has none")
            self.reference = 'base'
            return
        if weights is None and self.lora is not None:
            weights = self.weights()
        if self.world is not None:
            ref = parallel.reference(self.model, self.spec, self.world, weights)
        else:
            ref = copy.deepcopy(self.model) if weights is None else LanguageModel(self.spec).to(self.device)
            if weights is not None:
                load_weights(ref, weights)
        for p in ref.parameters():
            p.requires_grad_(False)
        self.reference = ref

    # ---- training ----

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def to_device(self, b):
        out = dict(b)
        for k in ('inputs', 'targets'):
            out[k] = b[k].to(self.device, torch.long)
        out['inputs'] = out['inputs'].view(b['batch'], b['seq'])
        out['targets'] = out['targets'].view(-1)
        if b.get('weights') is not None:
            out['weights'] = b['weights'].to(self.device)
        return out

    def loss_spec(self, spec):
        out = dict(spec)
        for k in ('reference', 'advantages', 'valid', 'old'):
            if isinstance(out.get(k), torch.Tensor):
                out[k] = out[k].to(self.device)
        return out

    @staticmethod
    def read(report):
        return {k: (v.tolist() if v.ndim else float(v)) for k, v in ((k, t.detach().float().cpu()) for k, t in report.items())}

    def forward_backward(self, b, spec):
        if self.opt is None:
            raise EngineError('this engine was made for inference: it has no optimizer')
        fn = LOSSES.get(spec['name'])
        if fn is None:
            raise EngineError(f'unknown loss {spec["name"]!r}')
        self.model.train()
        if self.lora:
            self.lora.set_dropout(self.steps, self.micro)
        self.trace(b)
        t0 = time.perf_counter()
        with self.autocast():
            total, report = fn(self.step_fn, self.to_device(b), self.loss_spec(spec))
        total.backward()
        self.micro += 1
        out = self.read(report)
        if self.world is not None:  # per-rank throughput, read after the work is done
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
            self.stats['tokens'] += b['batch'] * b['seq']
            self.stats['seconds'] += time.perf_counter() - t0
        return out

    def forward(self, b, spec):
        fn = LOSSES.get(spec['name'])
        if fn is None:
            raise EngineError(f'unknown loss {spec["name"]!r}')
        self.model.eval()
        with torch.no_grad(), self.autocast():
            _, report = fn(self.eval_model(), self.to_device(b), self.loss_spec(spec))
        return self.read(report)

    def trace(self, b):
        """With LATHE_TRACE_ROWS=<dir>: every trained row's tokens (its inputs, then its last target), one
        line per row in <dir>/rank<R>.txt after the call number; shows which rank read which sequence."""
        folder = os.environ.get('LATHE_TRACE_ROWS')
        if not folder:
            return
        self.calls = getattr(self, 'calls', 0) + 1
        rank = self.world.rank if self.world else 0
        inputs = b['inputs'].view(b['batch'], b['seq'])
        targets = b['targets'].view(b['batch'], b['seq'])
        with open(os.path.join(folder, f'rank{rank}.txt'), 'a') as f:
            for row in range(b['batch']):
                toks = inputs[row].tolist() + [int(targets[row, -1])]
                f.write(f'{self.calls} {" ".join(map(str, toks))}\n')

    def eval_model(self, reference=False):
        """The model for passes without gradients: the module itself (DDP needs no hooks there; an
        FSDP model is the sharded module, which every rank runs)."""
        return self.reference if reference else self.model

    def optim_step(self, lr):
        if self.opt is None:
            raise EngineError('this engine was made for inference: it has no optimizer')
        if self.micro == 0:
            raise EngineError('optimStep without gradients: call forwardBackward first')
        grads = [p.grad for p in self.params if p.grad is not None]
        if self.micro > 1:
            torch._foreach_mul_(grads, 1.0 / self.micro)
        self.micro = 0
        if self.world is not None and self.world.parallel == 'fsdp':
            norm = parallel.grad_norm(grads)
        else:  # one process, or DDP: the gradients are whole and the same on every rank
            norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        skipped = not (norm == norm and norm not in (float('inf'), float('-inf')))
        if not skipped:
            if self.clip > 0 and norm > self.clip:
                torch._foreach_mul_(grads, self.clip / norm)
            for group in self.opt.param_groups:
                group['lr'] = lr
            # torch adds 1 before use: the global count, for every parameter that has a gradient.
            for p in self.params:
                if p.grad is not None:
                    self.opt.state[p]['step'].fill_(float(self.steps))
            self.opt.step()
            self.steps += 1
        self.opt.zero_grad(set_to_none=True)
        return norm, skipped

    def rank_stats(self):
        """Every rank's tokens and compute seconds since the last call (all ranks call it)."""
        mine = {'rank': self.world.rank, 'host': self.world.host, **self.stats}
        self.stats = {'tokens': 0, 'seconds': 0.0}
        return self.world.all_gather(mine)

    # ---- inference ----

    def logprobs(self, b, reference=False, total=False):
        model = self.eval_model(reference)
        if model is None:
            raise EngineError('no reference model: call setReference first')
        # The base reference is this model with its adapters switched off: no second copy.
        off = isinstance(model, str)
        if off:
            model = self.model
            self.lora.set_enabled(False)
        try:
            model.eval()
            bd = self.to_device(b)
            with torch.no_grad(), self.autocast():
                if total:
                    return sequence_logprobs(model, bd).float().cpu()
                logits, _ = model(bd['inputs'])
                return token_logprobs(logits, bd['targets']).float().cpu()
        finally:
            if off:
                self.lora.set_enabled(True)

    def logits(self, ids):
        self.model.eval()
        with torch.no_grad(), self.autocast():
            logits, _ = self.model(ids.to(self.device, torch.long).view(1, -1))
        return logits.float().cpu()

    def decode_start(self, prompt, n):
        self.model.eval()
        cache = [dict() for _ in range(self.spec['layers'])]
        with torch.no_grad(), self.autocast():
            logits, _ = self.model(prompt.to(self.device, torch.long).view(1, -1), 0, cache)
        if n > 1:
            for c in cache:
                c['k'] = c['k'].expand(n, -1, -1, -1).contiguous()
                c['v'] = c['v'].expand(n, -1, -1, -1).contiguous()
        sid = self.next_session
        self.next_session += 1
        self.sessions[sid] = {'cache': cache, 'pos': prompt.numel(), 'n': n}
        return sid, logits[-1].float().cpu()

    def decode_step(self, sid, tokens):
        s = self.sessions.get(sid)
        if s is None:
            raise EngineError(f'no decode session {sid}')
        with torch.no_grad(), self.autocast():
            logits, _ = self.model(tokens.to(self.device, torch.long).view(s['n'], 1), s['pos'], s['cache'])
        s['pos'] += 1
        return logits.float().cpu()

    def decode_close(self, sid):
        self.sessions.pop(sid, None)

    # ---- batched decoding of different prompts ----

    def decoder(self, did):
        d = self.decoders.get(did)
        if d is None:
            d = self.decoders[did] = BatchDecoder(self)
        return d

    def batch_close(self, did):
        self.decoders.pop(did, None)


class BatchDecoder:
    """Rows with their own prompts and positions (continuous batching). Each row owns a slot of
    preallocated per-layer key/value buffers [slots, kvHeads, context, hd], grown by doubling; a step
    writes each row's new key in place at its position and attends with a mask up to it."""

    def __init__(self, engine):
        self.e = engine
        self.k = None
        self.v = None
        self.rows = {}  # row id -> [slot, next position]
        self.free = []
        self.next_row = 0

    def ensure(self, need, like):
        """Room for `need` rows: the buffers grow (by doubling) in the dtype and device of `like`."""
        s = self.e.spec
        have = 0 if self.k is None else self.k[0].shape[0]
        if need <= have:
            return
        cap = max(4, have)
        while cap < need:
            cap *= 2

        def zeros(n):
            return torch.zeros((n, s['kvHeads'], s['context'], s['headDim']), dtype=like.dtype, device=like.device)

        if self.k is None:
            self.k = [zeros(cap) for _ in range(s['layers'])]
            self.v = [zeros(cap) for _ in range(s['layers'])]
        else:
            self.k = [torch.cat([t, zeros(cap - have)]) for t in self.k]
            self.v = [torch.cat([t, zeros(cap - have)]) for t in self.v]
        self.free.extend(range(have, cap))

    def add(self, prompt, copies):
        t = prompt.numel()
        if t == 0:
            raise EngineError('batch decode: the prompt is empty (start it with bos)')
        if t > self.e.spec['context']:
            raise EngineError(f'batch decode: {t} prompt tokens exceed the context {self.e.spec["context"]}')
        self.e.model.eval()
        cache = [dict() for _ in range(self.e.spec['layers'])]
        with torch.no_grad(), self.e.autocast():
            logits, _ = self.e.model(prompt.to(self.e.device, torch.long).view(1, -1), 0, cache)
        self.ensure(len(self.rows) + copies, cache[0]['k'])
        rows = []
        for _ in range(copies):
            slot = self.free.pop(0)
            for i, c in enumerate(cache):
                self.k[i][slot, :, :t] = c['k'][0].to(self.k[i].dtype)
                self.v[i][slot, :, :t] = c['v'][0].to(self.v[i].dtype)
            self.rows[self.next_row] = [slot, t]
            rows.append(self.next_row)
            self.next_row += 1
        return rows, logits[-1].float().cpu()

    def step(self, rows, tokens):
        if len(rows) != tokens.numel():
            raise EngineError(f'batch decode: {len(rows)} rows but {tokens.numel()} tokens')
        if len(set(rows)) != len(rows):
            raise EngineError('batch decode: a row is named twice')
        live = []
        for r in rows:
            if r not in self.rows:
                raise EngineError(f'batch decode: row {r} is not live')
            if self.rows[r][1] >= self.e.spec['context']:
                raise EngineError(f'batch decode: row {r} is at the end of the context ({self.e.spec["context"]})')
            live.append(self.rows[r])
        dev = self.e.device
        slots = torch.tensor([s for s, _ in live], dtype=torch.long, device=dev)
        pos = torch.tensor([p for _, p in live], dtype=torch.long, device=dev)
        length = max(p for _, p in live) + 1
        caches = [RowCache(self.k[i], self.v[i], slots, pos, length) for i in range(self.e.spec['layers'])]
        with torch.no_grad(), self.e.autocast():
            logits = self.e.model.forward_rows(tokens.to(dev, torch.long).view(-1, 1), pos, caches)
        for row in live:
            row[1] += 1
        return logits.cpu()

    def drop(self, row):
        r = self.rows.pop(row, None)
        if r is not None:
            self.free.append(r[0])
            self.free.sort()

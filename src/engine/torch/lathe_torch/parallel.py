"""One run over several processes (GPUs, or CPU ranks) with torch.distributed, as torchrun starts them.

Rank 0 alone speaks to the TS controller; every request reaches the other ranks through
torch.distributed (a scatter of row shards for batch requests, the same header for the rest). The
model is replicated with DistributedDataParallel or sharded with FSDP2 (`fully_shard`); full weights
and optimizer state come in through torch.distributed.checkpoint's state-dict API, and checkpoints
go out as shards written by every rank through torch.distributed.checkpoint, converted by rank 0 to
Lathe's format, so a checkpoint is the same whatever the world size and a run saved on N ranks
resumes on M."""
import datetime
import os
import socket

import torch
import torch.distributed as dist

from .errors import EngineError
from .weights import check_weights, load_weights


class World:
    """This process's place in the run: rank, world size, local rank, the parallelism."""

    def __init__(self, rank, size, local_rank, parallel, timeout_s):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.parallel = parallel
        self.timeout_s = timeout_s
        self.host = socket.gethostname()

    @staticmethod
    def from_env():
        """The world torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), or None for a single process."""
        if 'RANK' not in os.environ or 'LATHE_PARALLEL' not in os.environ:
            return None
        return World(int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', 0)),
                     os.environ['LATHE_PARALLEL'], float(os.environ.get('LATHE_DIST_TIMEOUT', '600')))

    @property
    def leader(self):
        return self.rank == 0

    def start(self, device_kind):
        """Joins the process group: NCCL on CUDA (one device per local rank), gloo on the CPU. A
        collective that waits past the timeout fails instead of hanging the run."""
        timeout = datetime.timedelta(seconds=self.timeout_s)
        if device_kind == 'cuda':
            torch.cuda.set_device(self.local_rank)
            dist.init_process_group('nccl', timeout=timeout, device_id=torch.device('cuda', self.local_rank))
        else:
            dist.init_process_group('gloo', timeout=timeout)
        # One thread per rank when ranks share a CPU (torchrun sets OMP_NUM_THREADS=1 unless told).

    def device(self, kind):
        return torch.device('cuda', self.local_rank) if kind == 'cuda' else torch.device('cpu')

    def describe(self):
        """Every rank's pid and host, gathered on every rank."""
        out = [None] * self.size
        dist.all_gather_object(out, {'rank': self.rank, 'pid': os.getpid(), 'host': self.host})
        return out

    # ---- moving requests ----

    def scatter(self, per_rank):
        """Rank 0's list of one object per rank; each rank gets its own."""
        out = [None]
        dist.scatter_object_list(out, per_rank if self.leader else None, src=0)
        return out[0]

    def gather(self, obj):
        """Every rank's object, in rank order, on rank 0 (None elsewhere)."""
        out = [None] * self.size if self.leader else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj):
        """Rank 0's object on every rank."""
        out = [obj]
        dist.broadcast_object_list(out, src=0)
        return out[0]

    def all_gather(self, obj):
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def stop(self):
        if dist.is_initialized():
            dist.destroy_process_group()


# ---- row shards ----

def spans(n, size):
    """Contiguous, disjoint [start, end) of n rows over size ranks; the first n % size get one more."""
    base, extra = divmod(n, size)
    out, start = [], 0
    for r in range(size):
        end = start + base + (1 if r < extra else 0)
        out.append((start, end))
        start = end
    return out


def _rows(t, a, b, per_row):
    return None if t is None else t[a * per_row:b * per_row]


def shard_batch(args, tensors, size):
    """Splits a batch request by rows into one (args, tensors) per rank, with the loss's global
    denominators computed here, from the whole batch, so that every rank's share of the loss is its
    numerator over the whole batch's denominator (the shares add up to the one-process loss)."""
    bsz, seq = args['batch']['batch'], args['batch']['seq']
    loss = dict(args.get('loss') or {})
    name = loss.get('name')
    w = tensors.get('batch.weights')
    norms = {}
    if name == 'dpo':
        n = loss['pairs']
        if n < size:
            raise ValueError(f'{n} DPO pairs do not spread over {size} ranks: give each rank at least one pair')
        norms['pairs'] = n
        pair_spans = spans(n, size)
        row_sets = [list(range(a, b)) + list(range(n + a, n + b)) for a, b in pair_spans]
    else:
        if bsz < size:
            raise ValueError(f'a batch of {bsz} sequences does not spread over {size} ranks: give each rank at least one')
        row_sets = [list(range(a, b)) for a, b in spans(bsz, size)]
        if name == 'cross_entropy' or name is None:
            norms['tokens'] = float(w.sum().clamp(min=1)) if w is not None else float(bsz * seq)
        if name == 'policy_gradient':
            valid = tensors['loss.valid'].view(bsz, 1)
            mask = (w.view(bsz, seq) if w is not None else torch.ones(bsz, seq)) * valid
            norms['valid'] = float(tensors['loss.valid'].sum().clamp(min=1))
            norms['tokens'] = float(mask.sum().clamp(min=1))
    out = []
    for r, rows in enumerate(row_sets):
        idx = torch.tensor(rows, dtype=torch.long)
        part = {}
        for k, t in tensors.items():
            if k.startswith('batch.') or k in ('loss.old', 'loss.reference') and name == 'policy_gradient':
                part[k] = t.view(bsz, -1)[idx].reshape(-1)
            elif k in ('loss.advantages', 'loss.valid') or (k == 'loss.reference' and name == 'dpo'):
                part[k] = t[idx]
            else:
                part[k] = t
        a = dict(args)
        a['batch'] = {'batch': len(rows), 'seq': seq}
        if name == 'dpo':
            a['loss'] = {**loss, 'pairs': len(rows) // 2}
        a['shard'] = {'rank': r, 'size': size, 'norms': norms}
        out.append((a, part))
    return out


def add_reports(reports, size):
    """The ranks' shares of a loss report, added up: every value is already a share of the
    whole-batch value (numerator over the global denominator), except the MoE router statistics,
    which are means of each rank's tokens and are averaged."""
    out = {}
    for k in reports[0]:
        vals = [r[k] for r in reports]
        if isinstance(vals[0], list):
            s = [sum(x) for x in zip(*vals)]
            out[k] = [x / size for x in s] if k == 'expert_util' else s
        else:
            out[k] = sum(vals) / (size if k in ('aux_loss', 'z_loss') else 1)
    return out


# ---- the model over ranks ----

def _shard(model):
    from torch.distributed.fsdp import fully_shard
    for block in model.model.layers:
        fully_shard(block)
    fully_shard(model)


def _load_full(model, weights, world):
    """Rank 0's full weights into every rank's (replicated or sharded) model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    # Rank 0 checks names and shapes (Lathe's messages) and tells the others, so all stop alike.
    problem = None
    if world.leader:
        try:
            check_weights(model, weights)
        except Exception as ex:  # noqa: BLE001 - sent to every rank, raised below
            problem = str(ex)
    problem = world.broadcast(problem)
    if problem:
        raise EngineError(problem)
    if world.parallel == 'fsdp':
        # Rank 0's whole tensors into every rank's shards.
        full = {n: weights[n] for n, _ in model.named_parameters()} if world.leader else {}
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    else:
        if world.leader:
            load_weights(model, weights)
        with torch.no_grad():
            for p in model.parameters():
                dist.broadcast(p.data, src=0)


def wrap(model, spec, world, weights):
    """Makes `model` parallel in place and loads rank 0's weights into it; returns what the
    training pass calls (the DDP wrapper, or the FSDP-sharded model itself)."""
    if world.parallel == 'fsdp':
        _shard(model)
        _load_full(model, weights, world)
        return model
    from torch.nn.parallel import DistributedDataParallel
    _load_full(model, weights, world)
    # MoE: an expert no row of this rank chose has no gradient here; DDP must not wait for it.
    return DistributedDataParallel(model, device_ids=[world.local_rank] if model.cos.is_cuda else None,
                                   find_unused_parameters=spec['arch'] == 'moe', forward_sync_buffers=False)


def moments(p, name, state, world):
    """AdamW's moments for parameter p, from rank 0's checkpoint state (or zeros), placed as p is."""
    if state is None:  # the same on every rank: the request's optimizerStep says
        return torch.zeros_like(p), torch.zeros_like(p)
    out = []
    for key in ('m', 'v'):
        full = state[key][name] if world.leader else None
        if world.parallel == 'fsdp':
            from torch.distributed.tensor import distribute_tensor
            src = full.to(p.device) if world.leader else torch.empty(p.shape, dtype=p.dtype, device=p.device)
            out.append(distribute_tensor(src, p.device_mesh, p.placements, src_data_rank=0))
        else:
            t = full.to(p.device).clone() if world.leader else torch.empty_like(p)
            dist.broadcast(t, src=0)
            out.append(t)
    return out[0], out[1]


def full_tensor(t, world):
    """A parameter-shaped tensor gathered whole (FSDP) on rank 0, as fp32 on the CPU."""
    from torch.distributed.tensor import DTensor
    if isinstance(t, DTensor):
        t = t.full_tensor()
    return t.detach().float().cpu().contiguous() if world.leader else None


def full_weights(model, world):
    out = {}
    for n, p in model.named_parameters():
        t = full_tensor(p, world)
        if world.leader:
            out[n] = t
    return out


def shared_folder(world, folder):
    """Whether every rank sees rank 0's checkpoint folder (one host, or a shared filesystem): rank 0
    leaves a mark there and every rank looks for it."""
    mark = os.path.join(folder, '.lathe-shared')
    if world.leader:
        os.makedirs(folder, exist_ok=True)
        open(mark, 'w').close()
    dist.barrier()
    seen = world.all_gather(os.path.exists(mark))
    if world.leader:
        os.remove(mark)
    return all(seen)


def save_sharded(params, names, opt_state, world, folder):
    """Each rank writes its own shards through torch.distributed.checkpoint into folder/dcp (no
    gather over the network); then rank 0 converts those files to Lathe's format, full fp32 tensors
    by HF name: (weights, m, v) on rank 0, (None, None, None) elsewhere. Needs a folder every rank
    writes to (one host, or a shared filesystem)."""
    import torch.distributed.checkpoint as dcp
    path = os.path.join(folder, 'dcp')
    sd = {}
    for p in params:
        n = names[p]
        sd[f'w.{n}'] = p.detach()
        if opt_state is not None:
            sd[f'm.{n}'] = opt_state[p]['exp_avg']
            sd[f'v.{n}'] = opt_state[p]['exp_avg_sq']
    dcp.save(sd, checkpoint_id=path)
    dist.barrier()
    if not world.leader:
        return None, None, None
    # Global shapes (a DTensor's shape is the whole tensor's); DCP fills them from every rank's file.
    full = {k: torch.empty(tuple(t.shape), dtype=torch.float32) for k, t in sd.items()}
    dcp.load(full, checkpoint_id=path, no_dist=True)
    part = (lambda pre: {k[len(pre):]: t for k, t in full.items() if k.startswith(pre)})
    return part('w.'), (part('m.') if opt_state is not None else None), part('v.')


def reference(model, spec, world, weights):
    """A frozen copy for reference log-probabilities, parallel as the model is: `weights` from rank 0,
    or the model's current weights."""
    import copy
    from .model import LanguageModel
    if weights is None and world.parallel != 'fsdp':
        return copy.deepcopy(model)  # replicas are equal on every rank
    ref = LanguageModel(spec).to(model.cos.device)
    if world.parallel == 'fsdp':
        _shard(ref)
    if weights is not None:
        _load_full(ref, weights, world)
    else:  # the same shards, rank by rank
        with torch.no_grad():
            for r, p in zip(ref.parameters(), model.parameters()):
                r.to_local().copy_(p.to_local())
    return ref


def grad_norm(grads):
    """The global norm of sharded (DTensor) gradients."""
    from torch.distributed.tensor import DTensor
    total = torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False, foreach=True)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    return float(total)

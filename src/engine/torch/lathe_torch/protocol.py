"""The engine's wire format on stdin/stdout: frames of a 4-byte little-endian length, a JSON header,
then the raw bytes of the buffers the header lists ({name, dtype f32|i32, shape}), in order. A request
is {v, id, op, args, buffers}; a reply {id, ok, result, buffers} or {id, ok: false, error, trace}."""
import json
import os
import socket
import struct
import sys
import traceback

import numpy as np
import torch

from . import PROTOCOL_VERSION
from . import parallel, vml
from .engine import Engine
from .errors import EngineError

DTYPES = {'f32': (np.float32, torch.float32), 'i32': (np.int32, torch.int32)}


def read_exact(f, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            raise EOFError
        got += k
    return buf


def read_frame(f):
    (n,) = struct.unpack('<I', read_exact(f, 4))
    header = json.loads(read_exact(f, n))
    tensors = {}
    for b in header.get('buffers', []):
        np_dtype, _ = DTYPES[b['dtype']]
        count = int(np.prod(b['shape'])) if b['shape'] else 1
        raw = read_exact(f, count * 4)
        tensors[b['name']] = torch.from_numpy(np.frombuffer(raw, dtype=np_dtype).reshape(b['shape']))
    return header, tensors


def write_frame(f, header, tensors=None):
    tensors = tensors or {}
    listed = []
    blobs = []
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        dtype = 'i32' if t.dtype in (torch.int32, torch.int64) else 'f32'
        arr = t.to(torch.int32 if dtype == 'i32' else torch.float32).numpy()
        listed.append({'name': name, 'dtype': dtype, 'shape': list(arr.shape)})
        blobs.append(arr.tobytes())
    head = json.dumps({**header, 'buffers': listed}).encode()
    f.write(struct.pack('<I', len(head)))
    f.write(head)
    for b in blobs:
        f.write(b)
    f.flush()


def prefixed(tensors, prefix):
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def batch_of(args, tensors):
    b = {'inputs': tensors['batch.inputs'], 'targets': tensors['batch.targets'], 'batch': args['batch']['batch'],
         'seq': args['batch']['seq']}
    if 'batch.weights' in tensors:
        b['weights'] = tensors['batch.weights']
    return b


def loss_of(args, tensors):
    spec = dict(args['loss'])
    spec.update(prefixed(tensors, 'loss.'))
    if args.get('shard'):
        spec['shard'] = args['shard']
    return spec


# On several ranks: requests whose rows are split over the ranks, and those that only rank 0 runs
# under DDP (its replica is whole; under FSDP every rank holds a shard and runs them all).
SCATTERED = {'forward_backward', 'forward', 'logprobs'}
LEADER_UNDER_DDP = {'logits', 'decode_start', 'decode_step', 'decode_close', 'hello'}
# Tensors only rank 0 receives: weights and moments reach the others through torch.distributed.
WHOLE = ('w.', 'm.', 'v.')


class Server:
    def __init__(self, world=None):
        self.engine = None
        self.world = world

    def handle(self, op, args, tensors):
        if op == 'hello':
            w = self.world
            return {'version': PROTOCOL_VERSION, 'torch': torch.__version__, 'cuda': torch.cuda.is_available(),
                    'devices': torch.cuda.device_count(), 'threads': torch.get_num_threads(),
                    'bf16': torch.backends.mkldnn.is_available() or torch.cuda.is_available(),
                    'world': w.size if w else 1, 'parallel': w.parallel if w else None}, {}
        if op == 'init':
            if args.get('threads'):
                torch.set_num_threads(int(args['threads']))
            st = None
            if args.get('optimizerStep') is not None:
                st = {'m': prefixed(tensors, 'm.'), 'v': prefixed(tensors, 'v.'), 'step': args['optimizerStep']}
            self.engine = Engine(args['spec'], prefixed(tensors, 'w.'), args['device'], args['dtype'],
                                 args.get('optimizer'), st, args.get('checkpointActivations', False),
                                 args.get('compile', False), self.world, args.get('lora'), prefixed(tensors, 'a.'))
            return {'params': sum(p.numel() for p in self.engine.params), 'compileSeconds': self.engine.compile_seconds}, {}
        e = self.engine
        if e is None:
            raise EngineError(f'{op}: the engine is not initialised')
        if op == 'forward_backward':
            return {'report': e.forward_backward(batch_of(args, tensors), loss_of(args, tensors))}, {}
        if op == 'forward':
            return {'report': e.forward(batch_of(args, tensors), loss_of(args, tensors))}, {}
        if op == 'optim_step':
            norm, skipped = e.optim_step(float(args['lr']))
            out = {'gradNorm': norm if norm == norm else None, 'gradNormText': repr(norm), 'skipped': skipped,
                   'optimizerSteps': e.steps}
            if self.world is not None:
                out['ranks'] = e.rank_stats()
            return out, {}
        if op == 'logprobs':
            return {}, {'out': e.logprobs(batch_of(args, tensors), args.get('reference', False), args.get('sum', False))}
        if op == 'logits':
            return {}, {'out': e.logits(tensors['ids'])}
        if op == 'decode_start':
            sid, logits = e.decode_start(tensors['prompt'], int(args['n']))
            return {'session': sid}, {'out': logits}
        if op == 'decode_step':
            return {}, {'out': e.decode_step(int(args['session']), tensors['tokens'])}
        if op == 'decode_close':
            e.decode_close(int(args['session']))
            return {}, {}
        if op == 'batch_add':
            rows, logits = e.decoder(int(args['decoder'])).add(tensors['prompt'], int(args.get('copies', 1)))
            return {'rows': rows}, {'out': logits}
        if op == 'batch_step':
            return {}, {'out': e.decoder(int(args['decoder'])).step([int(r) for r in args['rows']], tensors['tokens'])}
        if op == 'batch_drop':
            e.decoder(int(args['decoder'])).drop(int(args['row']))
            return {}, {}
        if op == 'batch_close':
            e.batch_close(int(args['decoder']))
            return {}, {}
        if op == 'set_reference':
            w = prefixed(tensors, 'w.')
            # On several ranks only rank 0 holds the weights; `given` says the same to every rank.
            e.set_reference(w if args.get('given', bool(w)) else None, bool(args.get('base')))
            return {}, {}
        if op == 'weights':
            return {}, {f'w.{k}': v for k, v in e.weights().items()}
        if op == 'adapters':
            a = e.adapters()
            return {'lora': a is not None}, {f'a.{k}': v for k, v in (a or {}).items()}
        if op == 'memory':
            return e.memory(), {}
        if op == 'optimizer_state':
            st = e.optimizer_state()
            if st is None:
                return {'step': None}, {}
            m, v, step = st
            out = {f'm.{k}': t for k, t in m.items()}
            out.update({f'v.{k}': t for k, t in v.items()})
            return {'step': step}, out
        if op == 'save':
            e.save(args['dir'])
            return {}, {}
        raise EngineError(f'unknown op {op!r}')

    def serve(self, inp, out):
        while True:
            try:
                header, tensors = read_frame(inp)
            except EOFError:
                return
            rid = header.get('id')
            try:
                if header.get('v') != PROTOCOL_VERSION:
                    raise EngineError(f'protocol version {header.get("v")} is not {PROTOCOL_VERSION}; rebuild Lathe')
                if header.get('op') == 'shutdown':
                    write_frame(out, {'id': rid, 'ok': True, 'result': {}})
                    return
                result, tensors_out = self.handle(header.get('op'), header.get('args') or {}, tensors)
                write_frame(out, {'id': rid, 'ok': True, 'result': result}, tensors_out)
            except Exception as ex:  # every failure goes back to the TS side, which decides
                write_frame(out, {'id': rid, 'ok': False, 'error': f'{type(ex).__name__}: {ex}',
                                  'user': isinstance(ex, EngineError), 'trace': traceback.format_exc(limit=8)})


    # ---- several ranks ----

    def plan(self, op, args, tensors):
        """Rank 0's request as one (mode, op, args, tensors) per rank."""
        w = self.world
        if op in SCATTERED:
            return [('scatter', op, a, t) for a, t in parallel.shard_batch(args, tensors, w.size)]
        if op == 'set_reference':
            args = {**args, 'given': any(k.startswith('w.') for k in tensors)}
        small = {k: t for k, t in tensors.items() if not k.startswith(WHOLE)}
        idle = op in LEADER_UNDER_DDP and w.parallel == 'ddp'
        return [('all', op, args, tensors)] + [('idle' if idle else 'all', op, args, small)] * (w.size - 1)

    def serve_ranks(self, inp, out):
        """The request loop of every rank: rank 0 reads a request from the controller and hands each
        rank its part; every rank runs it; rank 0 combines the parts and replies. A failure that is not
        the request's fault ends this rank's process with its rank and host on stderr (torchrun then
        stops the others and the controller reports it)."""
        w = self.world
        while True:
            parts, rid = None, None
            if w.leader:
                try:
                    header, tensors = read_frame(inp)
                except EOFError:
                    header, tensors = {'op': 'shutdown', 'id': None, 'v': PROTOCOL_VERSION}, {}
                rid, op = header.get('id'), header.get('op')
                try:
                    if header.get('v') != PROTOCOL_VERSION:
                        raise EngineError(f'protocol version {header.get("v")} is not {PROTOCOL_VERSION}; rebuild Lathe')
                    parts = [('shutdown', op, {}, {})] * w.size if op == 'shutdown' else \
                        self.plan(op, header.get('args') or {}, tensors)
                except Exception as ex:  # the request's fault: no rank runs it
                    self.reply_error(out, rid, ex)
                    parts = [('skip', op, {}, {})] * w.size
            mode, op, args, tensors = w.scatter(parts)
            if mode == 'skip' or mode == 'idle':
                continue
            if mode == 'shutdown':
                if w.leader and rid is not None:
                    write_frame(out, {'id': rid, 'ok': True, 'result': {}})
                w.stop()
                return
            try:
                result, tensors_out = self.handle(op, args, tensors)
                if mode == 'scatter':
                    result, tensors_out = self.combine(op, result, tensors_out)
            except EngineError as ex:  # raised alike on every rank, before any collective
                if w.leader:
                    self.reply_error(out, rid, ex)
                continue
            except Exception as ex:
                fatal(w, ex)
            if w.leader:
                write_frame(out, {'id': rid, 'ok': True, 'result': result}, tensors_out)

    def combine(self, op, result, tensors_out):
        parts = self.world.gather((result, tensors_out))
        if not self.world.leader:
            return None, None
        if op == 'logprobs':
            return {}, {'out': torch.cat([t['out'] for _, t in parts])}
        return {'report': parallel.add_reports([r['report'] for r, _ in parts], self.world.size)}, {}

    @staticmethod
    def reply_error(out, rid, ex):
        write_frame(out, {'id': rid, 'ok': False, 'error': f'{type(ex).__name__}: {ex}',
                          'user': isinstance(ex, (EngineError, ValueError)), 'trace': traceback.format_exc(limit=8)})


def fatal(world, ex):
    sys.stderr.write(f'lathe_torch: rank {world.rank} ({world.host}): {type(ex).__name__}: {ex}\n'
                     f'{traceback.format_exc(limit=8)}')
    sys.stderr.flush()
    os._exit(1)


def connect(world):
    """Rank 0's line to the controller: a TCP connection to LATHE_ENGINE_ADDR, opened with the run's
    secret (the address may be reachable from other machines)."""
    host, port = os.environ['LATHE_ENGINE_ADDR'].rsplit(':', 1)
    ranks = world.describe()
    if not world.leader:
        return None, None
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    inp, out = sock.makefile('rb', buffering=1 << 20), sock.makefile('wb', buffering=1 << 20)
    write_frame(out, {'id': None, 'ok': True, 'result': {'secret': os.environ.get('LATHE_ENGINE_SECRET', ''),
                                                          'ranks': ranks, 'parallel': world.parallel}})
    return inp, out


def main():
    # The protocol owns stdout: anything printed (warnings, libraries) goes to stderr.
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    vml.settle()
    world = parallel.World.from_env()
    if world is None:
        Server().serve(sys.stdin.buffer, out)
        return
    try:
        world.start(os.environ.get('LATHE_DEVICE', 'cpu'))
        inp, sock_out = connect(world)
    except Exception as ex:
        fatal(world, ex)
    Server(world).serve_ranks(inp, sock_out)

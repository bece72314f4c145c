"""The engine's wire format on stdin/stdout: frames of a 4-byte little-endian length, a JSON header,
then the raw bytes of the buffers the header lists ({name, dtype f32|i32, shape}), in order. A request
is {v, id, op, args, buffers}; a reply {id, ok, result, buffers} or {id, ok: false, error, trace}."""
import json
import struct
import sys
import traceback

import numpy as np
import torch

from . import PROTOCOL_VERSION
from .engine import Engine, EngineError

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
    return spec


class Server:
    def __init__(self):
        self.engine = None

    def handle(self, op, args, tensors):
        if op == 'hello':
            return {'version': PROTOCOL_VERSION, 'torch': torch.__version__, 'cuda': torch.cuda.is_available(),
                    'devices': torch.cuda.device_count(), 'threads': torch.get_num_threads(),
                    'bf16': torch.backends.mkldnn.is_available() or torch.cuda.is_available()}, {}
        if op == 'init':
            if args.get('threads'):
                torch.set_num_threads(int(args['threads']))
            st = None
            if args.get('optimizerStep') is not None:
                st = {'m': prefixed(tensors, 'm.'), 'v': prefixed(tensors, 'v.'), 'step': args['optimizerStep']}
            self.engine = Engine(args['spec'], prefixed(tensors, 'w.'), args['device'], args['dtype'],
                                 args.get('optimizer'), st, args.get('checkpointActivations', False),
                                 args.get('compile', False))
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
            return {'gradNorm': norm if norm == norm else None, 'gradNormText': repr(norm), 'skipped': skipped,
                    'optimizerSteps': e.steps}, {}
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
            e.set_reference(w if w else None)
            return {}, {}
        if op == 'weights':
            return {}, {f'w.{k}': v for k, v in e.weights().items()}
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


def main():
    # The protocol owns stdout: anything printed (warnings, libraries) goes to stderr.
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    Server().serve(sys.stdin.buffer, out)

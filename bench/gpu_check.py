#!/usr/bin/env python3
"""The GPU check (bench/gpu_check.sh runs it): one table of what a GPU machine gives Lathe.

1. Matrix-product ceilings: bf16, TF32 and fp32 TFLOP/s (torch.matmul, square products).
2. The torch engine, as Lathe drives it (bench/torch_step.mjs: the TS core sending batches to the
   Python engine), against the standalone PyTorch reference (bench/reference_llama.py) on the same
   device: the small dense and MoE bench models, fp32 and bf16. Goal: at least 0.95x.
3. A ~1B-parameter dense model (dim 2048, 16 layers, context 2048, vocabulary 32k) in bf16 for 10
   steps: tokens/s and MFU against the measured bf16 ceiling. Goal: at least 40%.
4. Scaling over the GPUs of the machine (1 -> N) for the 1B model, when it has several.
5. tfjs-webgpu on the small dense model, when the webgpu package and tfjs were carried.

  python3 bench/gpu_check.py [--device cuda|cpu] [--quick] [--node NODE] [--torch-step JS] [--out FILE]

--device cpu --quick runs every part small on a CPU machine (to check the script end to end).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def ceiling(dtype, device, n, repeats):
    """TFLOP/s of an n x n x n product (mean of `repeats` after warm-ups)."""
    tf32 = dtype == 'tf32'
    if device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = tf32
    dt = torch.bfloat16 if dtype == 'bf16' else torch.float32
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    dt_s = (time.perf_counter() - t0) / repeats
    if device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False
    return 2 * n ** 3 / dt_s / 1e12


def run_json(cmd, timeout):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        why = next((l for l in lines if re.match(r'^\w*Error: ', l.strip())), lines[-1] if lines else '')
        raise RuntimeError(f'{os.path.basename(cmd[1])} exit {r.returncode}: {why.strip()[:300]}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--quick', action='store_true', help='small sizes (a CPU run of the script)')
    ap.add_argument('--node', default=shutil.which('node') or 'node')
    ap.add_argument('--torch-step', default=os.path.join(HERE, 'torch_step.mjs'))
    ap.add_argument('--out', default=os.path.join(os.environ.get('OUT', HERE), 'gpu_check.json'))
    a = ap.parse_args()
    dev = a.device
    if dev == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: torch sees no CUDA device; run with --device cpu --quick to check the script', file=sys.stderr)
        sys.exit(2)
    rows = []
    machine = {
        'torch': torch.__version__,
        'device': torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu',
        'gpus': torch.cuda.device_count() if dev == 'cuda' else 0,
    }

    def row(name, ours, ref, unit, note=''):
        rows.append({'name': name, 'ours': ours, 'reference': ref, 'unit': unit,
                     'ratio': (ours / ref) if (ours and ref) else None, 'note': note})
        print(f'[gpu_check] {name}: {ours} vs {ref} {unit} {note}', file=sys.stderr, flush=True)

    # 1. Ceilings.
    n = 1024 if a.quick else 8192
    peaks = {}
    for dt in ('bf16', 'tf32', 'fp32'):
        if dt == 'tf32' and dev != 'cuda':
            continue
        peaks[dt] = ceiling(dt, dev, n, 3 if a.quick else 10)
        row(f'matmul-ceiling:{dt}', peaks[dt], None, 'TFLOP/s', f'{n}^3 torch.matmul')

    work = tempfile.mkdtemp(prefix='lathe-gpu-')
    steps = '2' if a.quick else '5'

    # 2. The torch engine against the standalone reference, same device.
    refs = {}
    for model in ('small-dense', 'small-moe'):
        d = os.path.join(work, model)
        os.makedirs(d)
        run_json([a.node, a.torch_step, 'export', '--model', model, '--dir', d, '--batches', '8'], 600)
        for dtype in ('fp32', 'bf16'):
            try:
                ours = run_json([a.node, a.torch_step, 'train', '--model', model, '--dir', d, '--device', dev,
                                 '--dtype', dtype, '--warmup', '1', '--steps', steps], 900)
                ref = run_json([sys.executable, os.path.join(HERE, 'reference_llama.py'), '--dir', d, '--device', dev,
                                '--dtype', dtype, '--warmup', '1', '--steps', steps,
                                '--threads', str(os.cpu_count() if dev == 'cuda' else 2)], 900)
                row(f'train-{model}:torch-{dtype}', ours['tokensPerSecond'], ref['tokensPerSecond'], 'tokens/s',
                    f'losses {ours["losses"][0]:.5f} vs {ref["losses"][0]:.5f}')
                refs[f'{model}:{dtype}'] = ref
            except Exception as e:  # a row that cannot run is reported, the rest goes on
                row(f'train-{model}:torch-{dtype}', None, None, 'tokens/s', f'failed: {e}')

    # 2b. torch.compile on the small dense model in bf16: tokens/s against eager, compile time apart.
    d = os.path.join(work, 'small-dense')
    try:
        if dev != 'cuda' and a.quick:
            raise RuntimeError('not run with --device cpu --quick (the CPU compile alone takes minutes)')
        eager = run_json([a.node, a.torch_step, 'train', '--model', 'small-dense', '--dir', d, '--device', dev,
                          '--dtype', 'bf16', '--warmup', '1', '--steps', steps], 900)
        comp = run_json([a.node, a.torch_step, 'train', '--model', 'small-dense', '--dir', d, '--device', dev,
                         '--dtype', 'bf16', '--warmup', '2', '--steps', steps, '--compile'], 1200)
        row('train-small-dense:torch-bf16-compile', comp['tokensPerSecond'], eager['tokensPerSecond'], 'tokens/s',
            f'torch.compile vs eager; first step {comp["firstStepSeconds"]:.1f} s with the compile vs {eager["firstStepSeconds"]:.2f} s eager')
    except Exception as e:
        row('train-small-dense:torch-bf16-compile', None, None, 'tokens/s', f'failed: {e}')

    # 3. The ~1B model in bf16: tokens/s and MFU against the measured bf16 ceiling.
    big = 'gpu-1b-quick' if a.quick else 'gpu-1b'
    d = os.path.join(work, big)
    os.makedirs(d)
    batch = '2' if a.quick else '4'
    try:
        run_json([a.node, a.torch_step, 'export', '--model', big, '--dir', d, '--batches', '3', '--batch', batch], 900)
        ours = run_json([a.node, a.torch_step, 'train', '--model', big, '--dir', d, '--device', dev, '--dtype', 'bf16',
                         '--batch', batch, '--warmup', '2' if not a.quick else '1', '--steps', '10' if not a.quick else '2'],
                        1200)
        mfu = ours['tokensPerSecond'] * ours['flopsPerToken'] / (peaks['bf16'] * 1e12)
        row(f'train-{big}:torch-bf16', ours['tokensPerSecond'], None, 'tokens/s',
            f'{ours["params"] / 1e6:.0f}M params, batch {batch}; MFU {mfu * 100:.1f}% of the bf16 ceiling; engine start {ours["startSeconds"]:.1f} s')
        rows[-1]['mfu'] = mfu
    except Exception as e:
        row(f'train-{big}:torch-bf16', None, None, 'tokens/s', f'failed: {e}')

    # 4. Scaling over ranks (torch.distributed, FSDP): every GPU of the machine (2 CPU processes with
    # --device cpu) at the same batch per rank as one rank, as tokens/s against N x one rank's.
    n = machine['gpus'] if dev == 'cuda' else 2
    if n < 2:
        row('scaling', None, None, 'efficiency', '1 GPU here: multi-GPU scaling not measured')
    else:
        m, dtype = (big, 'bf16') if dev == 'cuda' else ('small-dense', 'fp32')
        per = int(batch) if dev == 'cuda' else 4
        d = os.path.join(work, f'scaling-{m}')
        os.makedirs(d)
        try:
            run_json([a.node, a.torch_step, 'export', '--model', m, '--dir', d, '--batches', '3', '--batch', str(per * n)], 900)
            common = [a.node, a.torch_step, 'train', '--model', m, '--dir', d, '--device', dev, '--dtype', dtype,
                      '--warmup', '1', '--steps', '2' if a.quick else '5']
            one = run_json(common + ['--batch', str(per)], 1200)
            many = run_json(common + ['--batch', str(per * n), '--ranks', str(n), '--parallel', 'fsdp'], 1200)
            eff = many['tokensPerSecond'] / (n * one['tokensPerSecond'])
            row(f'scaling-{m}:fsdp-{n}', many['tokensPerSecond'], n * one['tokensPerSecond'], 'tokens/s',
                f'{n} ranks, batch {per} each: efficiency {eff:.2f} of {n} x one rank ({one["tokensPerSecond"]:.0f} tokens/s)')
        except Exception as e:
            row(f'scaling-{m}:fsdp-{n}', None, None, 'tokens/s', f'failed: {e}')

    # 5. tfjs-webgpu (needs the tfjs and webgpu packages, which are not carried by default).
    step = os.path.join(HERE, 'train_step.mjs')
    if os.path.exists(os.path.join(HERE, '..', 'node_modules', 'webgpu')):
        try:
            d = os.path.join(work, 'small-dense')
            # The whole batch at once, as the reference; against PyTorch fp32 on the same GPU (row 2's reference).
            w = run_json([a.node, step, 'train', '--model', 'small-dense', '--backend', 'webgpu', '--dir', d,
                          '--warmup', '1', '--steps', steps, '--micro', '16'], 900)
            ref = refs.get('small-dense:fp32')
            row('train-small-dense:webgpu', w['tokensPerSecond'], ref and ref['tokensPerSecond'], 'tokens/s',
                f'tfjs-webgpu fp32 on {w.get("adapter")}, {w.get("dispatchesPerStep")} dispatches a step; '
                f'losses {w["losses"][0]:.5f}' + (f' vs torch {ref["losses"][0]:.5f}' if ref else ''))
        except Exception as e:
            row('train-small-dense:webgpu', None, None, 'tokens/s', f'failed: {e}')
    else:
        row('train-small-dense:webgpu', None, None, 'tokens/s', 'skipped: node_modules/webgpu and tfjs were not carried')

    print(f'\nLathe GPU check: {machine["device"]}, torch {machine["torch"]}, {machine["gpus"]} GPU(s)')
    print(f'{"case":<34} {"ours":>12} {"reference":>12} {"unit":>9} {"ratio":>6}  note')
    for r in rows:
        f = lambda v: f'{v:12.1f}' if isinstance(v, (int, float)) else f'{"-":>12}'
        ratio = f'{r["ratio"]:6.2f}' if r['ratio'] else f'{"-":>6}'
        print(f'{r["name"]:<34} {f(r["ours"])} {f(r["reference"])} {r["unit"]:>9} {ratio}  {r["note"]}')
    with open(a.out, 'w') as fh:
        json.dump({'machine': machine, 'cases': rows}, fh, indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()

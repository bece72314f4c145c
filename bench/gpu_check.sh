#!/usr/bin/env bash
# The GPU check: one table (bench/gpu_check.py says what it measures). On a lent GPU machine, from
# the repo root, with bench/.gpu carried (made here by bench/gpu_prepare.sh: node and the bundled
# torch-engine driver, since that machine has no Node and no registry):
#   bash bench/gpu_check.sh                      # CUDA, full sizes (a few minutes on an H200)
#   bash bench/gpu_check.sh --device cpu --quick # the same script, small, on this CPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
here=bench/.gpu
node=$(command -v node || true)
if [ -z "$node" ] && [ -f "$here/node.xz" ]; then
  mkdir -p /tmp/lathe-node && xz -dc "$here/node.xz" > /tmp/lathe-node/node && chmod +x /tmp/lathe-node/node
  node=/tmp/lathe-node/node
fi
[ -n "$node" ] || { echo "gpu_check: no node here and no $here/node.xz (run bench/gpu_prepare.sh and carry bench/.gpu)" >&2; exit 2; }
step=bench/torch_step.mjs
# The bundle is for a machine without the built tree; here, dist/ is current and a bundle may be stale.
[ ! -d dist ] && [ -f "$here/torch_step.mjs" ] && step="$here/torch_step.mjs"
[ -d dist ] || [ "$step" != bench/torch_step.mjs ] || { echo "gpu_check: dist/ is missing; run npm run build (or bench/gpu_prepare.sh)" >&2; exit 2; }
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
export PYTHONUNBUFFERED=1
exec "$py" bench/gpu_check.py --node "$node" --torch-step "$step" "$@"

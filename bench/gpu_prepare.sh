#!/usr/bin/env bash
# Makes bench/.gpu for a GPU machine without Node or a registry: this machine's node (xz, ~24 MB) and
# bench/torch_step.mjs bundled with the built library (esbuild), so bench/gpu_check.sh runs there
# with only the repo and bench/.gpu carried. The torch engine's Python package travels in src/.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build >/dev/null
mkdir -p bench/.gpu
./node_modules/.bin/esbuild bench/torch_step.mjs --bundle --platform=node --format=esm --outfile=bench/.gpu/torch_step.mjs --log-level=warning
[ -f bench/.gpu/node.xz ] || xz -T2 -9 -c "$(command -v node)" > bench/.gpu/node.xz
du -sh bench/.gpu

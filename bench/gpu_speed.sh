#!/usr/bin/env bash
# Issue 19 on a lent GPU, in one call: `hsidenoise run` (default method) on the speed bench's cubes with the
# eigen-image DCT on CUDA (--device auto) and on the CPU (--device cpu), same machine, same run.
# Installs nothing beyond the project; needs ../shared/data (the cubes) next to the repository.
#   bench/gpu_speed.sh OUT_DIR
set -euo pipefail
out=${1:?usage: bench/gpu_speed.sh OUT_DIR}
mkdir -p "$out"
python=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$out/gpu.txt"
for device in auto cpu; do
  "$python" bench/speed.py --python "$python" --device "$device" --no-fasthyde --no-bm4d \
    --cubes example 256x256x31 512x512x31 512x512x224 --json "$out/speed-$device.json" 2>&1 | tee "$out/speed-$device.log"
done

#!/usr/bin/env bash
# One device session: the three GPU scripts in order of value, each with its own time limit, all output
# under $OUT (see docs/benchmarks.md for what was recorded from it).
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch, sys; print(sys.version, torch.__version__, torch.version.cuda)" >> "$OUT/gpu.txt" 2>&1
timeout 200 python3 gpu_bench.py --json "$OUT/gpu_bench.json" --budget-s 170 > "$OUT/gpu_bench.log" 2>&1
echo "gpu_bench rc=$?" >> "$OUT/gpu.txt"
timeout 150 python3 vae_decode_probe.py > "$OUT/vae_probe.jsonl" 2> "$OUT/vae_probe.err"
echo "vae_probe rc=$?" >> "$OUT/gpu.txt"
timeout 200 python3 gpu_check.py --out /tmp/mova_check --json "$OUT/gpu_check.json" --scale 0.25 > "$OUT/gpu_check.log" 2>&1
echo "gpu_check rc=$?" >> "$OUT/gpu.txt"
df -h /tmp | tail -1 >> "$OUT/gpu.txt"

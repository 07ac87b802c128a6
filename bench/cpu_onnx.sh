#!/usr/bin/env bash
# CPU benchmark of torch fp32 vs onnxruntime fp32 / int8-dynamic / int4 on the bundled SmolLM2-135M,
# all in one build (stop: best measures every candidate, baseline in the same run).
# Needs: pip install -e ".[onnx]" && optpipe setup-onnx
set -euo pipefail
cd "$(dirname "$0")/.."
optpipe build recipes/cpu-onnx.yaml "$@" || true   # exit 3/4 = budget not met: the table is the result
sed -n '/^| # |/,/^$/p' optpipe-out/cpu-onnx/report.md

#!/usr/bin/env bash
# Issue 12 on a lent GPU (H100/H200), in parts that each fit one device call:
#   bash bench/gpu_rtx4060_8b.sh calibrate   # optpipe calibrate: the two-term step model of this GPU
#   bash bench/gpu_rtx4060_8b.sh build       # the rtx4060 recipe at the Llama-3.1-8B shape (gpu test)
# Needs the wheels of bench/gpu_wheels.txt in .whl/ (bash bench/fetch_gpu_wheels.sh) and, for `build`,
# a calibration JSON in $OPTPIPE_CACHE_DIR/host-calibration/ (else the projection is labelled uncalibrated).
# Writes logs and results under ${OUT:-bench/results/gpu-out}.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results/gpu-out}"; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OPTPIPE_CACHE_DIR="${OPTPIPE_CACHE_DIR:-$PWD/.gpu-cache}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
case "${1:-}" in
  calibrate)
    python3 -m optpipe.cli calibrate 2>&1 | tee "$out/calibrate.log"
    cp "$OPTPIPE_CACHE_DIR"/host-calibration/*.json "$out/" ;;
  build)
    export OPTPIPE_KEEP_GPU_TEST_OUTPUT="$out"
    python3 -m pytest -m gpu -x -q -p no:cacheprovider tests/build/test_engine_gpu.py -k real_size 2>&1 | tee "$out/build-test.log" ;;
  *) echo "usage: $0 calibrate|build" >&2; exit 2 ;;
esac

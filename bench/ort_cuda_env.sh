#!/usr/bin/env bash
# Build, offline from wheels, what bench/ort_cuda.py needs on the GPU machine beside the image's python:
#   PREFIX/export-site   the wheels of bench/ort_cuda_wheels.txt (optimum-onnx's exporter, transformers 4.57)
#   PREFIX/onnx-python   a wrapper: `exec python3 "$@"` with PYTHONPATH=PREFIX/export-site only, for OPTPIPE_ONNX_PYTHON
#   PREFIX/ort-site      the [ort-site] wheels: onnx-ir (int4's quantizer) and onnxruntime-gpu when its wheel is in WHEELS;
#                        put it first on PYTHONPATH so it shadows the image's CPU onnxruntime (both are module `onnxruntime`)
# Usage: bash bench/ort_cuda_env.sh WHEELS PREFIX      (PYTHON=... to use another python than python3)
# then:  PYTHONPATH=PREFIX/ort-site:$PYTHONPATH OPTPIPE_ONNX_PYTHON=PREFIX/onnx-python python3 bench/ort_cuda.py ...
#        bash bench/ort_cuda_env.sh --fetch WHEELS   (here, with PyPI: download the list's wheels; WITH_OPTIONAL=1 adds
#                                                      onnxruntime-gpu; .whl-ort/ is git-ignored)
set -euo pipefail
list="$(dirname "$0")/ort_cuda_wheels.txt"
if [ "${1:-}" = "--fetch" ] && [ $# -eq 2 ]; then
    mkdir -p "$2"
    specs=()
    while IFS= read -r line; do
        spec=$(echo "${line%%#*}" | tr -d '[:space:]')
        [ -n "$spec" ] || continue
        [[ "$line" == *optional* ]] && [ "${WITH_OPTIONAL:-0}" != 1 ] && continue
        specs+=("$spec")
    done < "$list"
    "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$2" "${specs[@]}"
    du -sh "$2"
    exit 0
fi
[ $# -eq 2 ] || { echo "usage: $0 WHEELS PREFIX  |  $0 --fetch WHEELS" >&2; exit 2; }
wheels=$(realpath "$1")
prefix=$(realpath -m "$2")
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')  # the venv's python, not the interpreter behind it
norm() { echo "$1" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/_/g'; }

export_files=() ort_files=()
while IFS= read -r line; do
    spec=$(echo "${line%%#*}" | tr -d '[:space:]')
    [ -n "$spec" ] || continue
    name=$(norm "${spec%%==*}") version=${spec#*==}
    found=""
    for f in "$wheels"/*.whl; do
        b=$(basename "$f")
        [ "$(norm "${b%%-*}")" = "$name" ] && [ "$(echo "$b" | cut -d- -f2)" = "$version" ] && found="$f"
    done
    if [ -z "$found" ]; then
        [[ "$line" == *optional* ]] && { echo "no wheel for $spec in $wheels (optional): skipped"; continue; }
        echo "missing wheel for $spec in $wheels (see $list for the download command)" >&2
        exit 2
    fi
    if [[ "$line" == *"[ort-site]"* ]]; then ort_files+=("$found"); else export_files+=("$found"); fi
done < "$list"

rm -rf "$prefix/export-site"
mkdir -p "$prefix"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$prefix/export-site" "${export_files[@]}"
cat > "$prefix/onnx-python" <<WRAP
#!/usr/bin/env bash
# optimum-onnx's exporter (transformers 4.57 from export-site) on $PY; made by bench/ort_cuda_env.sh
PYTHONPATH="$prefix/export-site" exec "$PY" "\$@"
WRAP
chmod +x "$prefix/onnx-python"
"$prefix/onnx-python" -c 'import transformers, optimum.exporters.onnx, optimum.commands.optimum_cli as c
assert transformers.__version__.startswith("4.57"), transformers.__version__
print("export env:", transformers.__version__, c.__file__)'

rm -rf "$prefix/ort-site"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$prefix/ort-site" "${ort_files[@]}"
PYTHONPATH="$prefix/ort-site${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c 'import torch, onnx_ir, onnxruntime as ort
import onnxruntime.quantization.matmul_nbits_quantizer, onnxruntime.transformers.float16
print("onnxruntime", ort.__version__, ort.get_available_providers())
if "CUDAExecutionProvider" not in ort.get_available_providers():
    print("this onnxruntime has no CUDA EP: the onnx rows will be \"not made\" (put onnxruntime_gpu-1.31.1 in WHEELS)")'
echo "OPTPIPE_ONNX_PYTHON=$prefix/onnx-python; put $prefix/ort-site first on PYTHONPATH"

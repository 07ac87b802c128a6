#!/usr/bin/env bash
# Build, offline from wheels, what bench/ort_cuda.py needs on the GPU machine beside the image's python:
#   PREFIX/export-site   the wheels of bench/ort_cuda_wheels.txt (optimum-onnx's exporter, transformers 4.57)
#   PREFIX/onnx-python   a wrapper: `exec python3 "$@"` with PYTHONPATH=PREFIX/export-site only, for OPTPIPE_ONNX_PYTHON
#   PREFIX/ort-site      onnxruntime-gpu, when an onnxruntime_gpu-*.whl is in WHEELS: put it first on PYTHONPATH so it
#                        shadows the image's CPU onnxruntime (both install the module `onnxruntime`)
# Usage: bash bench/ort_cuda_env.sh WHEELS PREFIX      (PYTHON=... to use another python than python3)
# then:  PYTHONPATH=PREFIX/ort-site:$PYTHONPATH OPTPIPE_ONNX_PYTHON=PREFIX/onnx-python python3 bench/ort_cuda.py ...
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 WHEELS PREFIX" >&2; exit 2; }
list="$(dirname "$0")/ort_cuda_wheels.txt"
wheels=$(realpath "$1")
prefix=$(realpath -m "$2")
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')  # the venv's python, not the interpreter behind it
norm() { echo "$1" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/_/g'; }

files=()
while IFS= read -r line; do
    spec=$(echo "${line%%#*}" | tr -d '[:space:]')
    [ -n "$spec" ] || continue
    name=$(norm "${spec%%==*}") version=${spec#*==}
    found=""
    for f in "$wheels"/*.whl; do
        b=$(basename "$f")
        [ "$(norm "${b%%-*}")" = "$name" ] && [ "$(echo "$b" | cut -d- -f2)" = "$version" ] && found="$f"
    done
    [ -n "$found" ] || { echo "missing wheel for $spec in $wheels (see $list for the download command)" >&2; exit 2; }
    files+=("$found")
done < "$list"

rm -rf "$prefix/export-site"
mkdir -p "$prefix"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$prefix/export-site" "${files[@]}"
cat > "$prefix/onnx-python" <<WRAP
#!/usr/bin/env bash
# optimum-onnx's exporter (transformers 4.57 from export-site) on $PY; made by bench/ort_cuda_env.sh
PYTHONPATH="$prefix/export-site" exec "$PY" "\$@"
WRAP
chmod +x "$prefix/onnx-python"
"$prefix/onnx-python" -c 'import transformers, optimum.exporters.onnx, optimum.commands.optimum_cli as c
assert transformers.__version__.startswith("4.57"), transformers.__version__
print("export env:", transformers.__version__, c.__file__)'

shopt -s nullglob
gpu=("$wheels"/onnxruntime_gpu-*.whl)
if [ ${#gpu[@]} -gt 0 ]; then
    rm -rf "$prefix/ort-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$prefix/ort-site" "${gpu[@]}"
    PYTHONPATH="$prefix/ort-site" "$PY" -c 'import torch, onnxruntime as ort
print("onnxruntime", ort.__version__, ort.get_available_providers())
assert "CUDAExecutionProvider" in ort.get_available_providers(), "onnxruntime-gpu has no CUDA EP"'
else
    echo "no onnxruntime_gpu-*.whl in $wheels: the image's onnxruntime has no CUDA EP, so the onnx rows will be 'not made'"
fi
echo "OPTPIPE_ONNX_PYTHON=$prefix/onnx-python; put $prefix/ort-site first on PYTHONPATH"

#!/usr/bin/env bash
# Rebuild the git-ignored .whl/ (wheels carried to the offline GPU machines) from bench/gpu_wheels.txt.
# Idempotent: a wheel already in .whl/ for NAME-VERSION is kept, missing ones are fetched, and wheels not
# on the list (other versions, removed packages) are deleted, so .whl/ ends up mirroring the list.
# Usage: bash bench/fetch_gpu_wheels.sh          (from anywhere; needs PyPI, any local python3 with pip)
set -euo pipefail
cd "$(dirname "$0")/.."
list=bench/gpu_wheels.txt
dest=.whl
PY="${PYTHON:-python3}"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo '/.whl/' >> .git/info/exclude; }
mkdir -p "$dest"

# wheel file names spell the project name normalized: lower case, runs of - _ . as one _
norm() { echo "$1" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/_/g'; }
have() {  # have NAME VERSION: a wheel for exactly this version is in .whl/
    local n v f
    n=$(norm "$1"); v="$2"
    for f in "$dest"/*.whl; do
        [ -e "$f" ] || continue
        f=$(basename "$f")
        [ "$(norm "${f%%-*}")" = "$n" ] && [ "$(echo "$f" | cut -d- -f2)" = "$v" ] && return 0
    done
    return 1
}

binary=() sdist=() keep=()
while IFS= read -r line; do
    spec=$(echo "${line%%#*}" | tr -d '[:space:]')
    [ -n "$spec" ] || continue
    name=${spec%%==*} version=${spec#*==}
    keep+=("$(norm "$name")-$version")
    have "$name" "$version" && continue
    if [[ "$line" == *sdist-only* ]]; then sdist+=("$spec"); else binary+=("$spec"); fi
done < "$list"

if [ ${#binary[@]} -gt 0 ]; then
    echo "downloading: ${binary[*]}"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${binary[@]}"
fi
if [ ${#sdist[@]} -gt 0 ]; then  # pure-Python projects with no wheel on PyPI: build py3-none-any here
    echo "building from sdist: ${sdist[*]}"
    "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$dest" "${sdist[@]}"
fi

for f in "$dest"/*.whl; do  # prune what the list no longer names
    [ -e "$f" ] || continue
    b=$(basename "$f")
    key="$(norm "${b%%-*}")-$(echo "$b" | cut -d- -f2)"
    printf '%s\n' "${keep[@]}" | grep -qxF "$key" || { echo "removing $b (not in $list)"; rm -f "$f"; }
done

n=$(ls "$dest"/*.whl | wc -l)
echo "$n wheels, $(du -sh "$dest" | cut -f1) in $dest (list: ${#keep[@]} entries)"
[ "$n" -eq "${#keep[@]}" ] || { echo "wheel count != list entries" >&2; exit 1; }

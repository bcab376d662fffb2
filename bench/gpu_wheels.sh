#!/usr/bin/env bash
# Wheels for bench/gpu_check.sh on the GPU machine (CPython 3.12, manylinux x86-64, torch 2.11
# already there): what mmclip, open_clip and DeepSpeed need beyond that image, pinned as in
# requirements.lock, into .whl/ (git-ignored via .git/info/exclude). DeepSpeed publishes only an
# sdist: its wheel is built here, pure Python (DS_BUILD_OPS=0: ops compile on first use there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
rm -rf .whl && mkdir .whl
pin() { grep -i "^$1==" requirements.lock | head -1; }
PACKAGES=(open_clip_torch ftfy wcwidth webdataset braceexpand xformers hjson pydantic pydantic_core annotated-types
          typing-inspection)
SPECS=()
for name in "${PACKAGES[@]}"; do
    spec=$(pin "$name" || true)
    SPECS+=("${spec:-$name}")
done
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "${SPECS[@]}"
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w .whl \
    "deepspeed==$(sed -n 's/^DEEPSPEED_VERSION := //p' Makefile)"
du -sh .whl && ls .whl

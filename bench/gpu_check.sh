#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): one run of about 8 minutes on one H100/H200, from
# the GPU machine's bare image (python3 with torch, transformers, timm; no open_clip, deepspeed or
# webdataset, no package registry). The missing wheels travel in .whl/ (bench/gpu_wheels.sh makes
# it, under 64 MiB); they are installed into /tmp/site, outside the image.
#
#   bench/gpu_wheels.sh                      # here, once: .whl/ for CPython 3.12 manylinux
#   bench/gpu_check.sh                       # there, from the repository root: bench/results/gpu_<device>.json
#   bench/gpu_check.sh --cpu-dry-run         # anywhere: the same path on CPU at tiny size (the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The dry run uses this machine's environment; the wheels are CPython 3.12 builds for the GPU image.
if [[ " $* " != *" --cpu-dry-run "* ]] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "$PYTHON" bench/gpu_check.py "$@"

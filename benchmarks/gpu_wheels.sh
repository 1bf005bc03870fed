#!/usr/bin/env bash
# Download, on a machine with a network, the wheels benchmarks/gpu_check.sh installs on an
# offline GPU machine (pure-Python packages pinned in requirements/, for CPython 3.12 on
# x86-64 Linux), into .whl/ (or $1). Only pins that GPU images commonly lack or hold at another
# version; torch and numpy stay the machine's own.
set -eu
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
PINS=$(grep -hE '^(diffusers|transformers|einops|imageio|tqdm)==' requirements/base.txt)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DEST" $PINS
ls -la "$DEST"

#!/usr/bin/env bash
# Download, on a machine with a network, the wheels benchmarks/gpu_check.sh installs on an
# offline GPU machine: the versions pinned in requirements/base.txt, for CPython 3.12 on
# x86-64 Linux, into DEST (default .whl/).
#
#   benchmarks/gpu_wheels.sh [DEST] [NAME ...]     default NAME: diffusers
#
# The lent H200 image has everything else kinemate's check imports (transformers and
# huggingface-hub at other versions that work); its tree, the reference data (35 MB) and the
# wheels must fit 64 MiB together, so only diffusers (6.4 MB) goes by default. Add
# imageio-ffmpeg (29 MB) only without the Animate Anyone reference data.
set -eu
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
[ $# -gt 0 ] && shift
NAMES=${*:-diffusers}
PY=${PYTHON:-python3}
PINS=""
for name in $NAMES; do
  pin=$(grep -ihE "^${name}==" requirements/base.txt || true)
  [ -n "$pin" ] || { echo "gpu_wheels.sh: $name is not pinned in requirements/base.txt" >&2; exit 2; }
  PINS="$PINS $pin"
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" $PINS
ls -la "$DEST"

#!/usr/bin/env bash
# One command for a fresh GPU machine holding kinemate's files: install what is missing from
# the project's pins (wheels handed over in a folder; such machines are often offline), link
# the shared reference data, run benchmarks/gpu_check.py, leave gpu_check.json + .md.
#
#   benchmarks/gpu_check.sh [--wheels DIR] [--shared DIR] [gpu_check.py options...]
#       --wheels DIR   wheels to install from (default .whl; made by benchmarks/gpu_wheels.sh)
#       --shared DIR   the reference data folder holding reference/ (default ../shared, else
#                      ./shared inside the checkout)
#   e.g. benchmarks/gpu_check.sh --out gpu-check            (on the GPU machine)
#        benchmarks/gpu_check.sh --cpu-smoke --out /tmp/gc  (anywhere: checks the script)
#
# The machine's own torch is kept (a CUDA build cannot travel as a wheel); its version and the
# other packages' are written in the report. Everything else pinned in requirements/base.txt
# that the check imports is installed at its pinned version when the machine's differs and a
# wheel is at hand (into a folder of its own, first on PYTHONPATH; nothing system-wide).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=.whl
SHARED=
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    --shared) SHARED=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

# the reference data beside the checkout (../shared), as the tests and benchmarks expect it
if [ -n "$SHARED" ] && [ ! -e ../shared ]; then ln -s "$(cd "$SHARED" && pwd)" ../shared
elif [ ! -d ../shared/reference ] && [ -d shared/reference ]; then ln -s "$PWD/shared" ../shared
fi
[ -d ../shared/reference ] || echo "gpu_check.sh: no reference data at ../shared/reference (give --shared DIR)" >&2

# pinned packages the check imports whose installed version differs (torch and numpy: the
# machine's own, reported)
NEED=$($PY - <<'PYEOF'
import importlib.metadata as md, re
wanted = {"diffusers", "transformers", "accelerate", "safetensors", "huggingface-hub", "einops",
          "pillow", "imageio", "tqdm", "pyyaml", "pytest", "psutil"}
pins = {}
for f in ("requirements/base.txt", "requirements/dev.txt"):
    for line in open(f):
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#;]+)", line.strip())
        if m and m.group(1).lower() in wanted:
            pins[m.group(1).lower()] = m.group(2)
for name, version in sorted(pins.items()):
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have != version:
        print(f"{name}=={version}")
PYEOF
)
SITE=${KINEMATE_CHECK_SITE:-/tmp/kinemate-check-site}
if [ -n "$NEED" ]; then
  echo "gpu_check.sh: pinned versions not installed here: $(echo $NEED)"
  if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    for pin in $NEED; do
      $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
          --target "$SITE" --find-links "$WHEELS" "$pin" \
        || echo "gpu_check.sh: no wheel for $pin in $WHEELS; the machine's version is used"
    done
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check.sh: no wheels folder ($WHEELS); the machine's versions are used"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
$PY -c "import diffusers, kinemate.pipeline" || { echo "gpu_check.sh: kinemate cannot be imported (see above); hand over wheels with --wheels" >&2; exit 2; }
exec $PY benchmarks/gpu_check.py "${ARGS[@]}"

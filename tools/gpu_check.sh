#!/usr/bin/env bash
# The prepared GPU check (under 5 minutes): ort_cam's CUDA execution-provider path against
# its CPU path and against PyTorch CUDA eager, on resnet50 and the bundled demo model.
#
#   tools/gpu_check.sh [--dry-run] [--no-tests] [gpu_check.py options]
#   tools/gpu_check.sh --fetch-wheels      # here, with pip's index at hand: see below
#
# It runs from a copy of the working tree, fetches nothing and installs nothing (PYTHONPATH
# is the tree). The Python it uses ($PYTHON, else python3) must hold numpy, onnx, onnxruntime
# (a build with CUDA for the CUDA rows), pillow, pytest and torch/torchvision (for resnet50).
# Pure-Python dependencies a GPU image often lacks (onnx-graphsurgeon, platformdirs) are
# imported straight from their wheels in .whl/ when missing (a pure-Python wheel is a zip
# file Python imports from: nothing is unpacked or installed): fetch them beforehand with
# --fetch-wheels (pip download, any platform) and carry .whl along. onnxruntime-gpu itself
# is ~200 MB and needs CUDA 12 libraries: where the image has only the CPU build, the CUDA
# rows say "UNAVAILABLE" and the CPU path and PyTorch still run.
#
# Steps, each under a time limit (4.5 minutes in all): the CUDA tests (tests/test_cuda.py,
# with the provider-selection and IOBinding tests; skip with --no-tests), then
# tools/gpu_check.py. --dry-run runs everything on the CPU with m = 8 (to check the script
# without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    "$PY" -m pip download --no-deps --only-binary=:all: -d .whl onnx-graphsurgeon platformdirs
    echo "carry .whl along (add /.whl/ to .git/info/exclude so git ignores it)"
    exit 0
fi
tests=1
args=()
for a in "$@"; do
    if [[ "$a" == "--no-tests" ]]; then tests=0; else args+=("$a"); fi
done

missing=$("$PY" - <<'EOF'
import importlib.util
need = ("numpy", "onnx", "onnxruntime", "onnx_graphsurgeon", "platformdirs", "PIL", "pytest")
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
EOF
)
if [[ -n "$missing" ]]; then
    if compgen -G ".whl/*.whl" > /dev/null; then
        wheels=$(printf '%s:' "$PWD"/.whl/*.whl)
        export PYTHONPATH="${wheels%:}${PYTHONPATH:+:$PYTHONPATH}"
        still=$("$PY" -c "import importlib.util as u; print(' '.join(m for m in '$missing'.split() if u.find_spec(m) is None))")
        if [[ -n "$still" ]]; then
            echo "missing Python modules: $still (not in .whl/ either)"
            exit 3
        fi
    else
        echo "missing Python modules: $missing (no wheels in .whl/: run --fetch-wheels first)"
        exit 3
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
ORT_CAM_CACHE=$(mktemp -d)
export ORT_CAM_CACHE
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: no GPU visible"

if [[ $tests == 1 ]]; then
    timeout 90 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py \
        tests/test_runtime.py tests/test_iobinding.py || echo "TESTS FAILED (continuing with the check)"
fi
timeout 170 "$PY" tools/gpu_check.py "${args[@]}"
echo "gpu_check.sh: ${SECONDS} s in all"

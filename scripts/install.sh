#!/usr/bin/env bash
# Create (or update) the project's virtualenv in .venv and install everything, including the
# official DAVIS interactive package. Usage: bash scripts/install.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip "setuptools>=70.1" wheel
# torch/torchvision first, pinned to the tested pair (CPU wheels work the same way)
$PIP install -q "torch==2.14.1" "torchvision==0.29.1"
$PIP install -q -r requirements.txt
# davisinteractive 1.0.4 pins an unbuildable scikit-learn: install it alone, without its pins,
# against the numpy/Cython already present (it compiles a small C extension).
if ! "$VENV/bin/python" -c "import davisinteractive" >/dev/null 2>&1; then
  $PIP install -q --no-cache-dir --no-deps --no-build-isolation "davisinteractive==1.0.4"
fi
echo "installed into $VENV"

#!/usr/bin/env bash
# Create (or update) the project-local virtual environment .venv/ and install brainmets.
#
# torch: if .venv already has a torch (e.g. a CUDA build you installed), it is kept.
# Otherwise torch==${BRAINMETS_TORCH_VERSION:-2.13.0} is installed first; on the
# project's CPU machines pip takes that release's CPU build from local disk.
# GPU users: install the CUDA build that matches their driver into .venv first
# (see README, "GPU install"), then run this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# pip's notes about absent local mirrors are noise; its exit status still counts.
pip_install() { .venv/bin/python -m pip install -q "$@" 2> >(grep -v "is ignored" >&2); }
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
pip_install --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch==${BRAINMETS_TORCH_VERSION:-2.13.0}"
  pip_install "torch==${BRAINMETS_TORCH_VERSION:-2.13.0}"
fi
echo "[setup] installing brainmets and its dependencies"
pip_install -e ".[test]"
.venv/bin/python -c "import torch, monai, brainmets; print(f'[setup] ok: torch {torch.__version__}, monai {monai.__version__}, brainmets {brainmets.__version__}')"

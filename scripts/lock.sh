#!/usr/bin/env bash
# Refresh requirements/lock.txt, the exact version of every package scripts/setup.sh
# installs: resolves pyproject.toml's ranges (test extra included) afresh in a
# throwaway virtual environment and writes what pip installed there.
#
#   bash scripts/lock.sh
#
# torch is installed in the same pip command, pinned (BRAINMETS_TORCH_VERSION,
# default 2.13.0: the CPU build on the project's machines), so that pip neither
# pulls a CUDA build nor lets torch float; torch itself is left out of the lock
# (setup.sh installs it, or keeps the CUDA build a GPU user installed first).
# Resolved with the python3 on PATH: the lock holds for that Python version.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=${BRAINMETS_TORCH_VERSION:-2.13.0}
VENV=$(mktemp -d "${TMPDIR:-/tmp}/brainmets-lock.XXXXXX")
trap 'rm -rf "$VENV"' EXIT
PY=${PYTHON:-python3}
"$PY" -m venv "$VENV"
# pip's notes about absent local mirrors are noise; its exit status still counts.
pip_install() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored" >&2); }
echo "[lock] resolving in $VENV with $("$PY" --version) and torch==$TORCH_VERSION"
pip_install --upgrade pip
pip_install "torch==$TORCH_VERSION" -e ".[test]"
{
  echo "# Exact versions scripts/setup.sh installs (pip constraints: -c requirements/lock.txt)."
  echo "# Written by scripts/lock.sh for $("$PY" --version) on $(uname -sm); do not edit by hand."
  echo "# torch is not here: setup.sh installs torch==$TORCH_VERSION or keeps the one already installed."
  "$VENV/bin/python" -m pip freeze --all --exclude-editable | grep -v -E '^(torch|triton|nvidia-[a-z0-9-]+)==' | LC_ALL=C sort -f
} > requirements/lock.txt.tmp
mv requirements/lock.txt.tmp requirements/lock.txt
echo "[lock] wrote requirements/lock.txt ($(grep -vc '^#' requirements/lock.txt) packages)"

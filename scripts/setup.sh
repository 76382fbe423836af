#!/usr/bin/env bash
# Create (or update) the project-local virtual environment .venv/ and install brainmets.
#
# Versions: every package is installed at the version requirements/lock.txt pins
# (a pip constraints file; refresh it with scripts/lock.sh).
# torch: if .venv already has a torch (e.g. a CUDA build you installed), it is kept,
# and so are the versions of the packages it requires (a CUDA build pins some of
# them itself; the lock gives way there). Otherwise
# torch==${BRAINMETS_TORCH_VERSION:-2.13.0} is installed first; on the project's
# CPU machines pip takes that release's CPU build from local disk.
# GPU users: install the CUDA build that matches their driver into .venv first
# (see README, "GPU install"), then run this script.
#
# --test: also install the system packages the test suite exercises for real
#         (a TeX engine with booktabs to compile the generated tables; Debian's
#         headless Chromium to look at the MLflow UI and the HTML report; Debian's
#         SLURM, munge and MariaDB for the real-cluster test), via apt-get when
#         running as root; otherwise say what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST_DEPS=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST_DEPS=1 ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
  esac
done
if [ "$WITH_TEST_DEPS" = 1 ]; then
  # command the tests run:Debian packages that bring it. The headless shell (no
  # desktop browser) is the smaller Chromium: on a bare Debian 12 ~100 MB to
  # download and ~300 MB installed with its libraries (the 64 MB browser
  # package itself installed in 17 s on the project's machine).
  APT_PKGS=""
  for need in "pdflatex:texlive-latex-base texlive-latex-recommended" \
              "chromium-headless-shell:chromium-headless-shell"; do
    command -v "${need%%:*}" >/dev/null || APT_PKGS="$APT_PKGS ${need#*:}"
  done
  if [ -n "$APT_PKGS" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "[setup] installing system packages for tests:$APT_PKGS"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq --no-install-recommends $APT_PKGS >/dev/null
    else
      echo "[setup] warning: install$APT_PKGS so the LaTeX and browser tests can run" >&2
    fi
  fi
  # A real single-node SLURM (munge, slurmctld, slurmd, slurmdbd, mariadb) for tests/cluster.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing SLURM packages for the cluster test"
    bash scripts/cluster/slurm_up.sh --install-only
  else
    echo "[setup] warning: not root: tests/cluster needs root to stand up SLURM" >&2
  fi
fi
PY=${PYTHON:-python3}
# pip's notes about absent local mirrors are noise; its exit status still counts.
pip_install() { .venv/bin/python -m pip install -q "$@" 2> >(grep -v "is ignored" >&2); }
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
LOCK=requirements/lock.txt
pip_install -c "$LOCK" --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch==${BRAINMETS_TORCH_VERSION:-2.13.0}"
  pip_install -c "$LOCK" "torch==${BRAINMETS_TORCH_VERSION:-2.13.0}"
fi
# The lock without the packages the installed torch requires: those stay as torch
# installed them (pinned by the lock above, or by a CUDA build's own requirements).
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
.venv/bin/python - "$LOCK" > "$CONSTRAINTS" <<'EOF'
import re
import sys
from importlib.metadata import requires


def name(requirement):
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()


torch_requires = {name(r) for r in requires("torch") or [] if "extra ==" not in r}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip() or name(line) not in torch_requires:
        sys.stdout.write(line)
EOF
echo "[setup] installing brainmets and its dependencies (versions: $LOCK)"
pip_install -c "$CONSTRAINTS" -e ".[test]"
.venv/bin/python -c "import torch, monai, brainmets; print(f'[setup] ok: torch {torch.__version__}, monai {monai.__version__}, brainmets {brainmets.__version__}')"

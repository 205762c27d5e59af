#!/usr/bin/env bash
# Set up jittor-sbvsr: a virtual environment in .venv with the pinned runtime,
# oneDNN for fast CPU convolutions, and Jittor's one-time compile done now
# (so the first real run does not look like a hang). As root on Debian/Ubuntu
# it also installs Open MPI for multi-process training (mpirun; Jittor builds
# its MPI ops with mpicc); SBVSR_SKIP_MPI=1 skips that.
# Usage: env/setup.sh [--test]   (--test also installs the test-only tools)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r env/jittor-1.3.8.5.txt
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r env/test-requirements.txt
fi
.venv/bin/python tools/install_onednn.py
if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
  if [ "${SBVSR_SKIP_MPI:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Open MPI (openmpi-bin, libopenmpi-dev) for multi-process training..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends openmpi-bin libopenmpi-dev >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends openmpi-bin libopenmpi-dev >/dev/null; } \
      || echo "warning: could not install Open MPI; single-process training still works" >&2
  else
    echo "note: Open MPI not found; training runs in one process. For mpirun training install" \
         "openmpi-bin and libopenmpi-dev (e.g. sudo apt-get install openmpi-bin libopenmpi-dev)."
  fi
fi
# CUDA 13 / cuDNN 9 with a driver: adapt the installed Jittor 1.3.8.5 (a no-op
# on CPU-only machines, with CUDA 11/12 and cuDNN 8, and when already done).
.venv/bin/python tools/jittor_cuda_patch.py
echo "Compiling Jittor once for this environment (a few minutes)..."
# Jittor exits early ("please rerun") after rebuilding its helpers: try again.
log=$(mktemp)
for try in 1 2 3; do
  .venv/bin/python -c "import jittor_sbvsr, jittor_sbvsr.runtime as r; r.select_device('auto'); print('ready:', r.describe())" 2>&1 | tee "$log" || true
  if grep -q '^ready:' "$log"; then rm -f "$log"; exit 0; fi
done
rm -f "$log"
echo "error: Jittor did not start (see above)" >&2
exit 1

#!/usr/bin/env bash
# Set up jittor-sbvsr: a virtual environment in .venv with the pinned runtime,
# oneDNN for fast CPU convolutions, and Jittor's one-time compile done now
# (so the first real run does not look like a hang).
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
echo "Compiling Jittor on first use (a few minutes, once per machine)..."
.venv/bin/python -c "import jittor_sbvsr, jittor_sbvsr.runtime as r; r.select_device('auto'); print('ready:', r.describe())"

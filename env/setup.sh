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

#!/usr/bin/env bash
# Linux/WSL2 shorthand for env/setup.py, the one installer (see its docstring):
# env/setup.sh [--test] [--venv DIR]. $PYTHON picks the interpreter for a new
# .venv; by default the first of python3.11, python3.12, python3 found.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-}
if [ -z "$py" ]; then
  for cand in python3.11 python3.12 python3; do
    if "$cand" -c '' 2>/dev/null; then py=$cand; break; fi  # a pyenv shim may exist unusable
  done
fi
exec "${py:-python3}" "$root/env/setup.py" "$@"

"""Self-Blind-VSR (Bai & Pan, TPAMI 2024) in pure Jittor."""
import sys

from . import runtime

try:
    runtime.prepare()
except runtime.RuntimeSetupError as _e:
    # An unusable installation (numpy 2, mpirun without mpicc): one line and
    # exit code 2, before Jittor is imported into it.
    print(runtime.error_line(_e), file=sys.stderr)
    raise SystemExit(2) from None

__version__ = '0.1.0'

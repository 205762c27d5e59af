"""Self-Blind-VSR (Bai & Pan, TPAMI 2024) in pure Jittor."""
from . import runtime

# Before anything imports Jittor. An unusable installation (numpy 2, mpirun
# without mpicc) raises runtime.InstallationError, an ImportError naming the
# problem; the commands (jittor_sbvsr_launcher.py) print it as one line.
runtime.prepare()

__version__ = '0.1.0'


def __getattr__(name):
    """``SelfBlindVSR`` (api.py), imported when first asked for: ``import jittor_sbvsr`` stays light."""
    if name == 'SelfBlindVSR':
        from .api import SelfBlindVSR
        return SelfBlindVSR
    raise AttributeError(f"module 'jittor_sbvsr' has no attribute {name!r}")

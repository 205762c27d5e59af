"""Self-Blind-VSR (Bai & Pan, TPAMI 2024) in pure Jittor."""
from . import runtime

runtime.prepare()

__version__ = '0.1.0'

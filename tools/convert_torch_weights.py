#!/usr/bin/env python3
"""Convert a PyTorch Self-Blind-VSR checkpoint (or PWC-Net weights) to our .pkl.

The code is jittor_sbvsr/cli/convert.py (also installed as ``sbvsr-convert``).

    python tools/convert_torch_weights.py self_blind_vsr_gaussian.pt gaussian.pkl
    python tools/convert_torch_weights.py network-default.pytorch pwc.pkl
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from jittor_sbvsr_launcher import convert as main  # noqa: E402  (the package is imported inside it)

if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python3
"""Build a blurred-down x4 test set (HR + LR_blurdown_x4 + kernels) from HR videos. See README.md.

The code is jittor_sbvsr/data/testsets.py (flags: jittor_sbvsr/cli/make_blurdown.py).

    python tools/make_blurdown_dataset.py --hr_root dataset/REDS4/HR \\
        --save_root dataset/REDS4_BlurDown_Realistic --type realistic --seed 0
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jittor_sbvsr_launcher import make_blurdown as main  # noqa: E402  (the package is imported inside it)

if __name__ == '__main__':
    sys.exit(main())

"""Self-supervised training of Self-Blind-VSR in Jittor (the reference's code/main.py). See README.md.

    python main.py --template Self_Blind_VSR_Gaussian
    python main.py --template Self_Blind_VSR_Demo --cpu          # a few minutes on a CPU
    python main.py --template Self_Blind_VSR_Gaussian --resume   # continue after the last epoch

The code is jittor_sbvsr/cli/train.py (also installed as ``sbvsr-train``).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jittor_sbvsr_launcher import train as main  # noqa: E402  (the package is imported inside it)

if __name__ == '__main__':
    sys.exit(main())

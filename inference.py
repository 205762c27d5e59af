"""Super-resolve LR videos with Self-Blind-VSR in Jittor. See README.md."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jittor_sbvsr_launcher import infer as main  # noqa: E402  (the package is imported inside it)

if __name__ == '__main__':
    sys.exit(main())

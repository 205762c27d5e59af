"""``tools/make_blurdown_dataset.py``: a blurred-down x4 test set from HR videos (data/testsets.py).

    python tools/make_blurdown_dataset.py --hr_root dataset/REDS4/HR \\
        --save_root dataset/REDS4_BlurDown_Realistic --type realistic --seed 0
"""


def main(argv=None):
    from ..data.testsets import build
    from . import guarded
    from .parser import Parser, checked

    def work():
        ap = Parser(description='Blur and x4-downsample HR videos into a paired test set '
                                '(HR, LR_blurdown_x4, kernels), as the Self-Blind-VSR test sets.')
        ap.add_argument('--hr_root', required=True, help='folder with one sub-folder of HR frames per video')
        ap.add_argument('--save_root', required=True, help='output folder')
        ap.add_argument('--type', dest='kind', required=True, choices=('gaussian', 'realistic'),
                        type=str.lower, help='kernel type')
        ap.add_argument('--seed', type=checked(int, lambda v: v >= 0, '>= 0'), default=0,
                        help='seed of the realistic kernels (default 0); unused for gaussian')
        args = ap.parse_args(argv)
        build(args.hr_root, args.save_root, args.kind, args.seed)
    return guarded(work)

"""Self-supervised training of Self-Blind-VSR in Jittor (the reference's code/main.py). See README.md.

    python main.py --template Self_Blind_VSR_Gaussian
    python main.py --template Self_Blind_VSR_Demo --cpu          # a few minutes on a CPU
    python main.py --template Self_Blind_VSR_Gaussian --resume   # continue after the last epoch
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    from jittor_sbvsr.cli import guarded

    def work():
        from jittor_sbvsr.options import parse_args
        args = parse_args(argv)
        from jittor_sbvsr.runtime import describe, select_device
        device = select_device('cpu' if args.cpu else 'auto')
        from jittor_sbvsr.trainer import dist
        if dist.rank() == 0:
            print(f'Self-Blind-VSR training: template {args.template}, {describe()}', flush=True)
        from jittor_sbvsr.trainer.trainer import run
        run(args, device=device)

    return guarded(work)


if __name__ == '__main__':
    sys.exit(main())

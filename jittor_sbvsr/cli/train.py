"""``sbvsr-train`` / ``main.py``: self-supervised training (the reference's code/main.py).

In the package so the installed command and the script run the same code.
"""


def main(argv=None):
    from . import guarded

    def work():
        from .train_options import parse_args
        args = parse_args(argv)
        from ..runtime import allow_tf32, describe, select_device
        allow_tf32(args.tf32)
        device = select_device('cpu' if args.cpu else 'auto')
        from .. import dist
        if dist.rank() == 0:
            print(f'Self-Blind-VSR training: template {args.template}, {describe()}', flush=True)
        from ..trainer.trainer import run
        run(args, device=device)

    return guarded(work)

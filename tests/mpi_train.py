"""Run the trainer as main.py does, then write this rank's final weights (for tests/test_mpi.py).

    mpirun -np 2 python tests/mpi_train.py OUT_DIR <main.py arguments>

Each rank writes OUT_DIR/rank<r>.npz, so a test can compare the ranks'
weights directly instead of trusting rank 0's checkpoint.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    out, argv = sys.argv[1], sys.argv[2:]
    from jittor_sbvsr.cli.train_options import parse_args
    from jittor_sbvsr.runtime import select_device
    from jittor_sbvsr import dist
    from jittor_sbvsr.trainer.trainer import Trainer
    import numpy as np
    args = parse_args(argv)
    device = select_device('cpu')
    trainer = Trainer(args, device=device)
    try:
        trainer.train()
    finally:
        trainer.close()
    weights = {k: v.numpy() for k, v in trainer.model.state_dict().items()}
    np.savez(os.path.join(out, f'rank{dist.rank()}.npz'), **weights)


if __name__ == '__main__':
    main()

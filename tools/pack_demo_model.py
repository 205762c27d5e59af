"""Pack a model trained by ``main.py --template Self_Blind_VSR_Demo`` as the demo's model.

    python tools/pack_demo_model.py experiment/Self_Blind_VSR_Demo/model/model_latest.pkl

writes jittor_sbvsr/weights/demo_model.npz: every weight but PWC-Net's, as float16
(the PWC-Net is the recipe's, rebuilt from its seed: weights/demo.py). The training starts
from that PWC-Net, which ``--flow_to DIR`` writes as DIR/network-default.pkl for
``main.py --pretrain_models_dir DIR``; bench/RESULTS.md gives the whole command.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jittor_sbvsr.errors import UserError  # noqa: E402
from jittor_sbvsr.weights.checkpoint import load_state  # noqa: E402
from jittor_sbvsr.weights.demo import DEMO_MODEL, pack  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('model', nargs='?', help="the trained demo model (.pkl)")
    p.add_argument('--flow_to', help="write the training's starting PWC-Net into this folder instead")
    p.add_argument('--out', default=DEMO_MODEL, help='where to write the packed model')
    a = p.parse_args(argv)
    try:
        if a.flow_to:
            return _write_flow(a.flow_to)
        if not a.model:
            p.error('give the trained model, or --flow_to')
        pack(load_state(a.model), a.out)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'{a.out}: {os.path.getsize(a.out) / 1e6:.2f} MB')
    return 0


def _write_flow(folder):
    from jittor_sbvsr.models import PWC_Recons
    from jittor_sbvsr.trainer.templates import TEMPLATES
    from jittor_sbvsr.weights.checkpoint import save_state_atomic
    from jittor_sbvsr.weights.demo import flow_state
    t = TEMPLATES['Self_Blind_VSR_Demo']
    net = PWC_Recons(n_feat=t['n_feat'], extra_RBS=t['extra_RBS'], recons_RBS=t['recons_RBS'], ksize=t['ksize'])
    path = os.path.join(folder, 'network-default.pkl')
    save_state_atomic(flow_state({k: v.shape for k, v in net.state_dict().items()}), path)
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())

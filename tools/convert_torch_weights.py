#!/usr/bin/env python3
"""Convert a PyTorch Self-Blind-VSR checkpoint (or PWC-Net weights) to our .pkl.

Needs no torch. The file is checked strictly against the Jittor model
(PWC_Recons in the paper configuration): any missing, unexpected or
mis-shaped key is an error and nothing is written.

    python tools/convert_torch_weights.py self_blind_vsr_gaussian.pt gaussian.pkl
    python tools/convert_torch_weights.py network-default.pytorch pwc.pkl
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def model_shapes():
    """Shapes of the full model; imported lazily so --help stays fast.

    Jittor's info log is silenced: this CLI prints one line, and building the
    model here only declares parameters (nothing is computed).
    """
    os.environ.setdefault('log_silent', '1')
    from jittor_sbvsr.errors import UserError
    from jittor_sbvsr.io.checkpoint import expected_shapes
    from jittor_sbvsr.runtime import RuntimeSetupError
    try:
        from jittor_sbvsr.models import PWC_Recons
        return expected_shapes(PWC_Recons())
    except (UserError, RuntimeSetupError):
        raise
    except Exception as e:
        msg = ' '.join(str(e).split())[:300]
        raise UserError(f'cannot build the Jittor model to check the weights against '
                        f'({type(e).__name__}: {msg})') from None


def choose_kind(state, full):
    """Full model, or PWC-Net weights keyed relative to flow_net.moduleNetwork."""
    from jittor_sbvsr.io.checkpoint import FLOW_PREFIX
    flow = {k[len(FLOW_PREFIX):]: s for k, s in full.items() if k.startswith(FLOW_PREFIX)}
    n_full = sum(k in full for k in state)
    n_flow = sum(k in flow for k in state)
    if n_flow > n_full:
        return 'PWC-Net', flow
    return 'full model', full


def convert(src, dst):
    from jittor_sbvsr.io import torch_pickle
    from jittor_sbvsr.io.checkpoint import _as_float32, save_state_atomic, validate_state
    state = torch_pickle.load_torch_file(src)
    kind, expected = choose_kind(state, model_shapes())
    what = ('the PWC-Net flow network (flow_net.moduleNetwork)' if kind == 'PWC-Net'
            else 'the Self-Blind-VSR model (PWC_Recons, paper configuration)')
    validate_state(state, expected, src, what=what)
    state = _as_float32(state, src)
    save_state_atomic(state, dst)
    n_values = sum(int(v.size) for v in state.values())
    return f'{src} -> {dst}: {len(state)} tensors, {n_values:,} values ({kind})'


def main(argv=None):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors='backslashreplace')
        except (AttributeError, ValueError):
            pass
    ap = argparse.ArgumentParser(
        description='Convert PyTorch Self-Blind-VSR weights (.pt, torch 0.4.1 legacy or zip '
                    'format) or PWC-Net weights (network-default.pytorch) to the .pkl format '
                    'of jittor-sbvsr. PyTorch is not needed.')
    ap.add_argument('input', help='PyTorch checkpoint (.pt / .pth / .pytorch)')
    ap.add_argument('output', help='output .pkl (written atomically)')
    args = ap.parse_args(argv)
    from jittor_sbvsr.cli import guarded
    return guarded(lambda: print(convert(args.input, args.output)))


if __name__ == '__main__':
    sys.exit(main())

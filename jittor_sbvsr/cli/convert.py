"""``sbvsr-convert`` / ``tools/convert_torch_weights.py``: PyTorch Self-Blind-VSR checkpoint
(or PWC-Net weights) -> our .pkl.

Needs no torch. The file is checked strictly against the Jittor model of
the architecture its tensors describe (weights/arch.py; the published files are
the paper configuration): any missing, unexpected or mis-shaped key, or a
NaN, is an error and nothing is written. The input is never overwritten:
an output that is the input (or a link to it) is refused. Lives in the package so the
installed command and the script run the same code.

    sbvsr-convert self_blind_vsr_gaussian.pt gaussian.pkl
    python tools/convert_torch_weights.py network-default.pytorch pwc.pkl
"""
import os
import sys


def model_shapes(arch=None):
    """Shapes of the full model (``arch``: PWC_Recons kwargs, default the paper's); imported lazily
    so --help stays fast.

    Jittor's info log is silenced (runtime.quiet_jittor): this CLI prints one line, and
    building the model here only declares parameters (nothing is computed).
    """
    from jittor_sbvsr import runtime
    runtime.quiet_jittor()
    from jittor_sbvsr.errors import UserError
    from jittor_sbvsr.weights.checkpoint import expected_shapes
    from jittor_sbvsr.runtime import RuntimeSetupError
    try:
        from jittor_sbvsr.models import PWC_Recons
        return expected_shapes(PWC_Recons(**(arch or {})))
    except (UserError, RuntimeSetupError):
        raise
    except Exception as e:
        msg = ' '.join(str(e).split())[:300]
        raise UserError(f'cannot build the Jittor model to check the weights against '
                        f'({type(e).__name__}: {msg})') from None


def choose_kind(state, full):
    """Full model, or PWC-Net weights keyed relative to flow_net.moduleNetwork."""
    from jittor_sbvsr.weights.checkpoint import FLOW_PREFIX
    flow = {k[len(FLOW_PREFIX):]: s for k, s in full.items() if k.startswith(FLOW_PREFIX)}
    n_full = sum(k in full for k in state)
    n_flow = sum(k in flow for k in state)
    if n_flow > n_full:
        return 'PWC-Net', flow
    return 'full model', full


def check_paths(src, dst):
    """Refuse an output that is the input (the same path, or a link to the same file)."""
    from jittor_sbvsr.errors import UserError
    same = os.path.abspath(src) == os.path.abspath(dst)
    try:
        same = same or (os.path.exists(dst) and os.path.samefile(src, dst))
    except OSError:
        pass
    if same:
        raise UserError(f'{dst}: is the input file {src} itself, which converting would replace; '
                        'give another output name (e.g. with .pkl)')


def _is_our_pkl(path):
    from jittor_sbvsr.errors import UserError
    from jittor_sbvsr.weights.checkpoint import load_state
    try:
        load_state(path)
        return True
    except UserError:
        return False


def convert(src, dst):
    from jittor_sbvsr.errors import UserError
    from jittor_sbvsr.weights import torch_pickle
    from jittor_sbvsr.weights.arch import PAPER, describe
    from jittor_sbvsr.weights.checkpoint import as_float32, check_finite, model_arch, save_state_atomic, validate_state
    from jittor_sbvsr.utils.files import remove_stale_temps, stale_note
    check_paths(src, dst)
    if os.path.isfile(src) and not torch_pickle.is_torch_file(src) and _is_our_pkl(src):
        raise UserError(f'{src}: is already a jittor-sbvsr weights file (.pkl), nothing to convert: give it '
                        'to inference.py --model_path (or main.py --pre_train) as it is')
    state = as_float32(torch_pickle.load_torch_file(src), src)
    kind, expected = choose_kind(state, model_shapes())
    what = 'the PWC-Net flow network (flow_net.moduleNetwork)'
    if kind != 'PWC-Net':
        arch = model_arch(state, src)  # the loader's checks (weights/checkpoint.py:read_model)
        if arch != PAPER:
            expected = model_shapes(arch)
        kind = f'full model: {describe(arch)}'
        what = f'the Self-Blind-VSR model its own tensors describe (PWC_Recons, {describe(arch)})'
    validate_state(state, expected, src, what=what)
    check_finite(state, src)
    note = stale_note(remove_stale_temps(os.path.dirname(os.path.abspath(dst)), of=os.path.basename(dst)))
    save_state_atomic(state, dst)
    n_values = sum(int(v.size) for v in state.values())
    return (note + '\n' if note else '') + f'{src} -> {dst}: {len(state)} tensors, {n_values:,} values ({kind})'


def main(argv=None):
    # the console's encoding errors: jittor_sbvsr_launcher.safe_console, as for every command
    from jittor_sbvsr.cli import guarded
    from jittor_sbvsr.cli.parser import Parser  # a bad argument is one 'error:' line and exit 2

    def work():
        ap = Parser(
            description='Convert PyTorch Self-Blind-VSR weights (.pt, torch 0.4.1 legacy or zip '
                        'format) or PWC-Net weights (network-default.pytorch) to the .pkl format '
                        'of jittor-sbvsr. PyTorch is not needed.')
        ap.add_argument('input', help='PyTorch checkpoint (.pt / .pth / .pytorch)')
        ap.add_argument('output', help='output .pkl (written atomically; never the input)')
        args = ap.parse_args(argv)
        print(convert(args.input, args.output))
    return guarded(work)


if __name__ == '__main__':
    sys.exit(main())

"""The PWC_Recons architecture a checkpoint holds, read from its tensors' names and shapes.

Why: the published .pt files carry no configuration, and a model the trainer
wrote with other options (the demo's n_feat 16, 1 + 2 ResBlocks, ...) must
load as it is, not as the paper's configuration. Everything PWC_Recons'
constructor takes is visible in the weights:

- ``in_conv.0.weight`` [n_feat, n_colors, 3, 3];
- ``extra_feat.<i>.*`` / ``recons_net.<i>.*``: the ResBlocks of each chain,
  ``conv1.weight`` [n_feat, n_feat, k, k] gives ``kernel_size``;
- ``upsample_layers.<2j>.weight``: one x2 step each, so scale = 2 ** steps;
- ``fusion_conv.0.weight`` [n_feat, n_feat * n_sequence, 3, 3];
- ``kernel_net.fc_net.0.weight`` [1000, ksize * ksize].

A value that cannot be read (a key missing) keeps the paper's; the strict
key check (checkpoint.validate_state) then lists what does not fit.
"""
import math
import re

from ..errors import UserError
from .checkpoint import FLOW_PREFIX

# The published checkpoints' configuration (PWC_Recons' defaults).
PAPER = dict(n_colors=3, n_sequence=5, extra_RBS=3, recons_RBS=20, n_feat=128, kernel_size=3, scale=4,
             ksize=13)


def _shape(state, key):
    v = state.get(key)
    return None if v is None else tuple(int(s) for s in v.shape)


def _blocks(state, chain):
    """Number of ResBlocks of a chain: one past the highest index seen (gaps show in the key check)."""
    idx = [int(m.group(1)) for k in state for m in [re.match(rf'{chain}\.(\d+)\.', k)] if m]
    return max(idx) + 1 if idx else 0


def describe(arch):
    """One short phrase, e.g. 'x4, 5-frame windows, n_feat 128, 3 + 20 ResBlocks, 13x13 kernels'."""
    return (f"x{arch['scale']}, {arch['n_sequence']}-frame windows, n_feat {arch['n_feat']}, "
            f"{arch['extra_RBS']} + {arch['recons_RBS']} ResBlocks, {arch['ksize']}x{arch['ksize']} kernels")


def derive_arch(state, path):
    """``PWC_Recons`` keyword arguments that ``state`` was made with.

    Raises a UserError for a file that is not a Self-Blind-VSR model (only
    PWC-Net weights, no upsampling layers) or whose shapes contradict each
    other in a way no architecture explains.
    """
    if not any(k.startswith(('in_conv.', 'fusion_conv.', 'recons_net.', 'upsample_layers.')) for k in state):
        flow = any(k.startswith((FLOW_PREFIX, 'moduleExtractor.')) for k in state)
        raise UserError(f'{path}: holds no Self-Blind-VSR reconstruction network (no in_conv, fusion_conv, '
                        'recons_net or upsample_layers weights)'
                        + ('; it looks like PWC-Net weights alone, which training reads from '
                           'pretrain_models/network-default.pkl' if flow else ''))
    arch = dict(PAPER)
    w = _shape(state, 'in_conv.0.weight')
    if w and len(w) == 4:
        arch['n_feat'], arch['n_colors'] = w[0], w[1]
    arch['extra_RBS'] = _blocks(state, 'extra_feat')
    arch['recons_RBS'] = _blocks(state, 'recons_net')
    for chain in ('extra_feat', 'recons_net'):
        w = _shape(state, f'{chain}.0.conv1.weight')
        if w and len(w) == 4:
            arch['kernel_size'] = w[-1]
            break
    steps = sum(1 for k in state if re.fullmatch(r'upsample_layers\.\d+\.weight', k))
    if steps == 0:
        raise UserError(f'{path}: the model has no upsampling layers (upsample_layers.*), so it is no '
                        'super-resolution model this inference can run')
    arch['scale'] = 2 ** steps
    w = _shape(state, 'fusion_conv.0.weight')
    if w and len(w) == 4:
        if w[1] % arch['n_feat']:
            raise UserError(f'{path}: fusion_conv.0.weight takes {w[1]} channels, not a multiple of the '
                            f"{arch['n_feat']} features per frame (in_conv.0.weight): not a PWC_Recons model")
        arch['n_sequence'] = w[1] // arch['n_feat']
    w = _shape(state, 'kernel_net.fc_net.0.weight')
    if w and len(w) == 2:
        k = math.isqrt(w[1])
        if k * k == w[1]:
            arch['ksize'] = k
    return arch


def conflicts(arch, wanted):
    """[(setting, checkpoint value, flag, flag value)] where ``wanted`` ({setting: (flag, value)})
    differs from the checkpoint; a value of None means 'not given' and never conflicts."""
    return [(k, arch[k], flag, v) for k, (flag, v) in wanted.items() if v is not None and v != arch[k]]


def conflict_error(path, found, advice):
    """One UserError naming each checkpoint setting and the flag it conflicts with."""
    parts = '; '.join(f'it has {k} {a}, but {flag} {v}' for k, a, flag, v in found)
    return UserError(f'{path}: the checkpoint does not fit the options: {parts}; {advice}')

"""Deterministic numpy-only weights (the reference data's recipe).

The public parity case was computed upstream with these weights, so tests
and the demo can run the full model without any checkpoint. The gains make
the flow branch matter. The recipe itself is part of the reference data
(tests/reference/README.md; docs/porting.md, "Reference data").
"""
import hashlib

import numpy as np

from .checkpoint import FLOW_PREFIX as _FLOW
_LEVELS = ('moduleTwo', 'moduleThr', 'moduleFou', 'moduleFiv', 'moduleSix')


def _gain(key):
    if key in ('out_conv.1.weight', 'out_conv.1.bias'):
        return 0.05
    if key.startswith(_FLOW):
        k = key[len(_FLOW):]
        if any(k.startswith(f'{lv}.moduleSix.0.') for lv in _LEVELS) or k.startswith('moduleRefiner.moduleMain.12.'):
            return 0.25
        if k.startswith('moduleExtractor.') and k.endswith('.weight'):
            return 3.0
    if key == 'fusion_conv.0.weight':
        return 20.0
    return None


def recipe_state(shapes, seed=1234):
    """``shapes``: ordered {key: shape} (the model's state_dict order)."""
    rng = np.random.RandomState(seed)
    state = {}
    for key, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        bound = 1.0 / np.sqrt(float(np.prod(shape[1:]))) if len(shape) >= 2 else 0.05
        w = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        g = _gain(key)
        if g is not None:
            w = (w * np.float32(g)).astype(np.float32)
        state[key] = w
    return state


def state_sha256(state):
    h = hashlib.sha256()
    for v in state.values():
        h.update(np.ascontiguousarray(v, dtype='<f4').tobytes())
    return h.hexdigest()

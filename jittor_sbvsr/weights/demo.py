"""The demo's model: trained by this port's own ``Self_Blind_VSR_Demo`` template on the demo clips.

Shipped without its PWC-Net, which is the recipe's (weights/recipe.py: ``recipe_state``
of the flow keys alone, seed 1234, the training's start) and is rebuilt here, so the
repository holds only the rest: 0.7 M parameters as float16 in demo_model.npz. How it
was made and how it learned: bench/RESULTS.md; tools/pack_demo_model.py packs it.
"""
import os

import numpy as np

from .checkpoint import FLOW_PREFIX
from .recipe import recipe_state

__all__ = ['DEMO_MODEL', 'FLOW_SEED', 'flow_state', 'demo_state', 'pack']

DEMO_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'demo_model.npz')
FLOW_SEED = 1234


def flow_state(shapes):
    """The recipe's PWC-Net for a model whose ``shapes`` ({key: shape}, state_dict order) are given."""
    return recipe_state({k: s for k, s in shapes.items() if k.startswith(FLOW_PREFIX)}, seed=FLOW_SEED)


def demo_state(shapes, path=DEMO_MODEL):
    """The full demo model: the packed weights (float32 again) and the rebuilt PWC-Net."""
    with np.load(path) as z:
        state = {k: z[k].astype(np.float32) for k in z.files}
    state.update(flow_state(shapes))
    return state


def pack(state, path=DEMO_MODEL, dtype=np.float16):
    """Write a trained demo model's weights other than its PWC-Net (``state``: {key: array})."""
    from ..utils.files import atomic_save
    rest = {k: np.asarray(v).astype(dtype) for k, v in state.items() if not k.startswith(FLOW_PREFIX)}

    def write(tmp):
        with open(tmp, 'wb') as f:  # a file, not a name: numpy would add '.npz' to the name
            np.savez_compressed(f, **rest)
    atomic_save(path, write)

"""Write the parity tests' deterministic recipe weights (seed 1234) as a .pkl checkpoint (GPU check only)."""
import os
import sys

sys.path.insert(0, os.getcwd())
from jittor_sbvsr.weights.checkpoint import save_state_atomic  # noqa: E402
from jittor_sbvsr.weights.recipe import recipe_state, state_sha256  # noqa: E402

ref, out = sys.argv[1], sys.argv[2]
with open(os.path.join(ref, 'upstream_state_dict_keys.txt'), encoding='utf-8') as f:
    rows = [line.split('\t') for line in f.read().splitlines()]
state = recipe_state({k: tuple(int(s) for s in shape.split(',')) for k, shape, _ in rows}, seed=1234)
save_state_atomic(state, out)
print('recipe weights', state_sha256(state), '->', out, flush=True)

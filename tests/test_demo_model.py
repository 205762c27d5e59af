"""The shipped demo model (weights/demo.py): small, packed without its PWC-Net, rebuilt with the
recipe's."""
import os

import numpy as np

from conftest import infer_here
from jittor_sbvsr.weights.checkpoint import FLOW_PREFIX
from jittor_sbvsr.weights.demo import DEMO_MODEL, FLOW_SEED, demo_state, pack
from jittor_sbvsr.weights.recipe import recipe_state


def test_demo_model_is_small_and_packs_without_its_pwc_net(tmp_path):
    assert os.path.getsize(DEMO_MODEL) < 2e6
    with np.load(DEMO_MODEL) as z:
        assert z.files and not any(k.startswith(FLOW_PREFIX) for k in z.files)
        assert all(z[k].dtype == np.float16 for k in z.files)
        packed = {k: z[k] for k in z.files}
    shapes = {FLOW_PREFIX + 'a.weight': (2, 3, 3, 3), FLOW_PREFIX + 'a.bias': (2,)}
    state = demo_state(shapes)
    flow = recipe_state(shapes, seed=FLOW_SEED)
    assert all(np.array_equal(state[k], flow[k]) for k in flow)
    assert all(state[k].dtype == np.float32 and np.array_equal(state[k], packed[k].astype(np.float32)) for k in packed)
    pack(state, tmp_path / 'again.npz')
    with np.load(tmp_path / 'again.npz') as z:
        assert sorted(z.files) == sorted(packed) and all(np.array_equal(z[k], packed[k]) for k in packed)



def test_the_shipped_demo_model_beats_bicubic_on_the_demo_clips(tmp_path):
    """``inference.py --demo`` as a first-time user runs it (a project root without the paper's
    checkpoint): the shipped model scores above bicubic on every frame's average, and says so."""
    result = infer_here('--demo', '--device', 'cpu', root=tmp_path)
    assert result.frames == 14 and result.bicubic_psnr is not None
    assert result.psnr > result.bicubic_psnr, (result.psnr, result.bicubic_psnr)
    log = next((tmp_path / 'demo_results' / 'infer_demo').glob('inference_log_*.txt')).read_text(encoding='utf-8')
    assert f'demo: the model beats bicubic by {result.psnr - result.bicubic_psnr:.2f} dB' in log

"""data/synthetic.py: the demo clips are the same for the same seed."""
import os

import numpy as np

from jittor_sbvsr.data.images import read_frame
from jittor_sbvsr.data.synthetic import make_demo_videos


def test_demo_videos_are_deterministic(tmp_path):
    a = make_demo_videos(tmp_path / 'a', n_videos=1, n_frames=3, hr_size=(32, 48), seed=4,
                         kernel='realistic')
    b = make_demo_videos(tmp_path / 'b', n_videos=1, n_frames=3, hr_size=(32, 48), seed=4,
                         kernel='realistic')
    for sub in ('HR', 'LR_blurdown_x4'):
        for f in sorted(os.listdir(os.path.join(a[sub.lower() if sub == 'HR' else 'lr'], '000'))):
            pa = os.path.join(a['root'], sub, '000', f)
            pb = os.path.join(b['root'], sub, '000', f)
            np.testing.assert_array_equal(read_frame(pa), read_frame(pb))
    np.testing.assert_array_equal(np.load(os.path.join(a['kernels'], '000.npy')),
                                  np.load(os.path.join(b['kernels'], '000.npy')))
    f0 = read_frame(os.path.join(a['hr'], '000', '00000000.png'))
    f1 = read_frame(os.path.join(a['hr'], '000', '00000001.png'))
    assert f0.shape == (32, 48, 3) and not np.array_equal(f0, f1)  # the camera pans

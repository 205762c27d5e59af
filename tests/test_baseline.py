"""infer/baseline.py: bicubic's scores beside the model's, on the frames the model's were taken on."""
import numpy as np
from PIL import Image

from jittor_sbvsr.data.kernels import bicubic_upscale
from jittor_sbvsr.infer.baseline import bicubic_rows, demo_verdict
from jittor_sbvsr.infer.inputs import Video


def test_bicubic_rows_pair_each_output_frame_with_its_own_ground_truth(tmp_path):
    """GT frame t is bicubic of LR frame t exactly (PSNR inf): any other pairing, or a missed
    size-multiple crop, would score a finite PSNR. Frame folders and a video file alike."""
    rng = np.random.default_rng(0)
    lr = [rng.integers(0, 256, (34, 50, 3), dtype=np.uint8) for _ in range(6)]
    lr_files, gt_files = [], []
    for t, f in enumerate(lr):
        for kind, img, files in (('lr', f, lr_files), ('gt', bicubic_upscale(f[:32, :48], 4), gt_files)):
            p = tmp_path / kind / f'{t:03d}.png'
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(img).save(p)
            files.append(str(p))
    windows = [[max(0, min(5, t + d)) for d in (-1, 0, 1)] for t in range(1, 5)]  # centres 1..4
    v = Video('v', lr_files, gt_files, (34, 50), None, 6, None, None, None)
    rows = bicubic_rows(v, windows, 1, 16, 4)
    assert np.all(np.isinf(rows[:, 0])) and np.allclose(rows[:, 1], 1.0)
    # shifted by one frame: finite everywhere
    v2 = v._replace(gt=gt_files[1:] + gt_files[:1])
    assert np.all(np.isfinite(bicubic_rows(v2, windows, 1, 16, 4)[:, 0]))


def test_demo_verdict_says_below_in_words():
    assert demo_verdict(25.3, 24.96, False).startswith('demo: the model beats bicubic by 0.34 dB')
    line = demo_verdict(22.5, 24.96, True)
    assert 'BELOW bicubic' in line and '2.46 dB' in line and line.endswith('its weights are untrained')
    assert demo_verdict(24.5, 24.96, False).endswith('it is not trained enough for them')

#!/usr/bin/env python
"""Per-frame host work of an inference run, before and after; not a test.

    python bench/host_speed.py --size 720x1280 --repeat 3

Times (best of ``--repeat``, one thread, seconds per frame) on two
photo-like frame pairs of that size: psnr_ssim as it was at git revision
``--before`` (read with ``git show``) against the package's, and SSIM as
tests/test_host_speed.py's 2-D reference computes it; PSNR;
PNG encoding with Pillow's default (zlib level 6) against each other
setting, with the file sizes; reading a PNG back with the package's
read_frame, plain Pillow and imageio. Prints one JSON object.
"""
import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from jittor_sbvsr.data.images import read_frame  # noqa: E402
from jittor_sbvsr.metrics.psnr_ssim import psnr, psnr_ssim, ssim  # noqa: E402
from jittor_sbvsr.utils.files import save_png_atomic  # noqa: E402
from test_host_speed import _real_looking, _ssim_2d  # noqa: E402

PNG_SETTINGS = {'pillow default (level 6)': {}, 'level 1': {'compress_level': 1},
                'level 3': {'compress_level': 3}, 'Z_RLE (package)': {'compress_type': zlib.Z_RLE}}


def best(fn, repeat):
    """(best seconds, last result) of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()  # host time
        out = fn()
        times.append(time.perf_counter() - t0)  # host time
    return min(times), out


def module_at(rev, path, tmp):
    """The module ``path`` as it was at git revision ``rev``, imported from a copy."""
    src = subprocess.run(['git', '-C', ROOT, 'show', f'{rev}:{path}'], check=True, capture_output=True,
                         encoding='utf-8').stdout
    copy = os.path.join(tmp, 'before_' + os.path.basename(path))
    with open(copy, 'w', encoding='utf-8') as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location('before', copy)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def frames(h, w):
    """name -> (sr, gt): a synthetic photo-like pair and the reference case's SR frame scaled up."""
    pairs = {'synthetic': _real_looking(h, w)}
    case = os.path.join(ROOT, '..', 'shared', 'reference', 'public_case')
    if os.path.isdir(case):
        def up(p):
            return np.asarray(Image.open(os.path.join(case, p)).convert('RGB').resize((w, h), Image.BICUBIC))
        pairs['public_case upscaled'] = (up('upstream_sr/000/00000000.png'), up('HR/000/00000000.png'))
    return pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--size', default='720x1280', help='HxW of the HR frames')
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--before', default='db96ba0', help='git revision of the metrics to compare against')
    a = ap.parse_args()
    h, w = map(int, a.size.split('x'))
    res = {'size': a.size, 'repeat': a.repeat, 'before': a.before, 'frames': {}}
    with tempfile.TemporaryDirectory() as tmp:
        old = module_at(a.before, 'jittor_sbvsr/metrics/psnr_ssim.py', tmp)
        for name, (sr, gt) in frames(h, w).items():
            sr_c, gt_c = sr[4:-4, 4:-4], gt[4:-4, 4:-4]
            r = res['frames'][name] = {}
            r['psnr_ssim_before_s'], v_old = best(lambda: old.psnr_ssim(sr, gt), a.repeat)
            r['psnr_ssim_s'], v_new = best(lambda: psnr_ssim(sr, gt), a.repeat)
            r['abs_diff_psnr_ssim'] = [abs(x - y) for x, y in zip(v_new, v_old)]
            r['speedup'] = r['psnr_ssim_before_s'] / r['psnr_ssim_s']
            r['ssim_2d_s'], s_2d = best(lambda: _ssim_2d(sr_c, gt_c), a.repeat)
            r['ssim_s'], s_new = best(lambda: ssim(sr_c, gt_c), a.repeat)
            r['ssim_abs_diff_2d'] = abs(s_new - s_2d)
            r['psnr_s'] = best(lambda: psnr(sr_c, gt_c), a.repeat)[0]
            im = Image.fromarray(sr)
            r['png'] = {}
            for label, kw in PNG_SETTINGS.items():
                def enc():
                    buf = io.BytesIO()
                    im.save(buf, format='PNG', **kw)
                    return buf.getvalue()
                sec, data = best(enc, a.repeat)
                same = np.array_equal(np.asarray(Image.open(io.BytesIO(data))), sr)
                r['png'][label] = {'encode_s': sec, 'bytes': len(data), 'pixels_identical': same}
            path = os.path.join(tmp, 'f.png')
            r['save_png_atomic_s'] = best(lambda: save_png_atomic(path, sr), a.repeat)[0]
            import imageio.v3 as iio
            r['read'] = {
                'read_frame': best(lambda: read_frame(path), a.repeat)[0],
                'pillow': best(lambda: np.asarray(Image.open(path).convert('RGB')), a.repeat)[0],
                'imageio': best(lambda: iio.imread(path), a.repeat)[0]}
            print(f'{name}: psnr_ssim {r["psnr_ssim_before_s"]:.3f} -> {r["psnr_ssim_s"]:.3f} s '
                  f'({r["speedup"]:.1f}x, |diff| {max(r["abs_diff_psnr_ssim"]):.1e}); 2-D ssim '
                  f'{r["ssim_2d_s"]:.3f} s; psnr {r["psnr_s"]:.3f} s; png '
                  + ', '.join(f'{k} {v["encode_s"]:.3f} s {v["bytes"] / 1e6:.2f} MB' for k, v in r['png'].items())
                  + '; read ' + ', '.join(f'{k} {v:.3f} s' for k, v in r['read'].items()), file=sys.stderr)
    print(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()

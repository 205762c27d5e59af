#!/usr/bin/env python
"""A whole inference run against its network time: what scoring and writing add; not a test.

    python bench/whole_run.py --lr-size 90x160 --frames 9 --threads 2 --json bench/results/X.json

One synthetic clip (data/synthetic.py pan, seed 0; its HR frames are the
ground truth), the recipe weights (weights/recipe.py, seed 1234), ``--border``,
PNG output: ``infer.run.run`` of the flags' plan called in this process, as the CLI calls it,
once untimed (Jittor compiles), then ``--runs`` times each of:

- ``no_gt``: without ground truth (the SR frames written as PNG);
- ``gt``:    the same with ``--gt_path`` (PSNR/SSIM of every frame, as
             ``--quick_test`` runs do).

Per run: ``wall_s`` (the call, start-up and checks included), ``loop_s``
(the log's ``completed: ... in X s``: the windows, their scoring and
writing), ``forward_s`` (the sum of the log's per-frame ``forward_time``:
the network alone, timed after ``jt.sync_all(True)``). The ratios the
goals are stated in: ``gt_vs_no_gt`` = loop_s(gt) / loop_s(no_gt), and
``no_gt_vs_forward`` = loop_s(no_gt) / forward_s(no_gt) (medians over the
runs). ``--package DIR`` times the package of another checkout (e.g. the
main branch's, for a before/after on the same machine and load).
Prints one JSON object (also written to ``--json``).
"""
import argparse
import os
import re
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--lr-size', default='90x160', help='LR frame size HxW')
    p.add_argument('--frames', type=int, default=9)
    p.add_argument('--threads', type=int, default=2, help='OMP_NUM_THREADS')
    p.add_argument('--runs', type=int, default=2, help='timed runs of each kind')
    p.add_argument('--package', default=ROOT, help='checkout whose jittor_sbvsr is timed')
    p.add_argument('--json', default=None)
    return p.parse_args(argv)


def _log_times(folder):
    """(loop seconds, summed forward seconds, frames) from a run's log."""
    log = next(f for f in os.listdir(folder) if f.startswith('inference_log_'))
    with open(os.path.join(folder, log), encoding='utf-8') as fh:
        text = fh.read()
    forward = [float(x) for x in re.findall(r'forward_time=([0-9.]+)s', text)]
    loop = float(re.search(r'^completed: .* in ([0-9.]+) s$', text, re.M).group(1))
    return loop, sum(forward), len(forward)


def main(argv=None):
    a = parse_args(argv)
    os.environ['OMP_NUM_THREADS'] = str(a.threads)
    sys.path.insert(0, os.path.abspath(a.package))
    sys.path.insert(1, os.path.join(ROOT, 'bench'))
    import jittor_sbvsr  # noqa: F401
    from common import emit, machine, save_recipe
    from jittor_sbvsr.cli.infer import build_parser
    from jittor_sbvsr.infer.plan import make_plan
    from jittor_sbvsr.data.synthetic import make_demo_videos
    from jittor_sbvsr.infer.run import run
    h, w = (int(x) for x in a.lr_size.split('x'))
    res = {'bench': 'whole_run', 'package': os.path.abspath(a.package), 'lr_size': [h, w], 'frames': a.frames,
           'threads': a.threads, 'machine': machine(), 'runs': {'no_gt': [], 'gt': []}}
    with tempfile.TemporaryDirectory() as d:
        dirs = make_demo_videos(os.path.join(d, 'clip'), n_videos=1, n_frames=a.frames, hr_size=(4 * h, 4 * w))
        model = os.path.join(d, 'recipe.pkl')
        save_recipe(model)

        def one(kind, flag):
            argv = ['--input_path', dirs['lr'], '--model_path', model, '--result_path', os.path.join(d, 'out'),
                    '--infer_flag', flag, '--border', '--device', 'cpu']
            if kind == 'gt':
                argv += ['--gt_path', dirs['hr']]
            t0 = time.perf_counter()  # host time: around the whole call
            run(make_plan(vars(build_parser().parse_args(argv)), ROOT))
            wall = time.perf_counter() - t0
            loop, forward, n = _log_times(os.path.join(d, 'out', f'infer_{flag}'))
            assert n == a.frames, (n, a.frames)
            return {'wall_s': round(wall, 3), 'loop_s': loop, 'forward_s': round(forward, 3)}

        one('gt', 'warm')
        for i in range(a.runs):  # alternating: a change of the machine's load hits both kinds
            for kind in ('no_gt', 'gt'):
                res['runs'][kind].append(one(kind, f'{kind}_{i}'))
    med = {kind: {key: statistics.median(r[key] for r in runs) for key in ('wall_s', 'loop_s', 'forward_s')}
           for kind, runs in res['runs'].items()}
    res['median'] = med
    res['gt_vs_no_gt'] = round(med['gt']['loop_s'] / med['no_gt']['loop_s'], 3)
    res['no_gt_vs_forward'] = round(med['no_gt']['loop_s'] / med['no_gt']['forward_s'], 3)
    res['gt_vs_forward'] = round(med['gt']['loop_s'] / med['gt']['forward_s'], 3)
    res['machine']['loadavg_at_end'] = os.getloadavg()
    emit(res, a.json)


if __name__ == '__main__':
    sys.exit(main())

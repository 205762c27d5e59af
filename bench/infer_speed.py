#!/usr/bin/env python
"""Inference (and training-step) speed of jittor-sbvsr; not a test.

    python bench/infer_speed.py --lr-size 180x320 --frames 7 --threads 2
    python bench/infer_speed.py --train-step --threads 2

Inference: a synthetic clip (data/synthetic.py: a photo panned a few pixels
per frame, blurred down x4) of ``--frames`` LR frames, every frame restored
(border windows), with the deterministic recipe weights (weights/recipe.py): no
downloads. Configurations:

- ``reuse``     : the default engine (frame features and PWC-Net pyramids
                  computed once per frame);
- ``baseline``  : ``--no_reuse`` (everything recomputed for every window);
- ``tiled``     : reuse, ``--tile`` x ``--tile``-pixel tiles (memory, PSNR vs ``reuse``);
- ``unfused``   : reuse without the fused oneDNN convolutions (ops/fused_conv.py)
                  that the CPU engines use by default;
- ``direct``    : the default engine with direct convolutions in the fused
                  chains (``--no_winograd``; Winograd runs where oneDNN has it);
- ``layered``   : reuse with the upsampling and output convs run layer by layer
                  (``--no_compose``), not composed into one LR conv
                  (models/tails.py);
- ``nhwc``, ``nChw8c``, ``nChw16c``: the default engine with the fused ops'
                  activation layout forced (default: oneDNN's choice).

Each ablation turns off one thing of the default engine. ``reuse``,
``baseline``, ``unfused``, ``direct``, ``layered`` and the layouts share one process and alternate pass by pass (a
change in the machine's load hits both); ``tiled`` runs in its own process,
so that each peak RSS (``resource.getrusage``) is its own. Each engine first
runs one untimed pass over the clip (Jittor compiles a kernel for each new
fused graph, and with reuse the windows' graphs differ), then ``--runs``
timed passes; every window is timed
after ``jt.sync_all(True)``. Seconds per output frame = median over the
windows; ``mean_s_per_frame`` = all windows' time / windows (the first
window of a pass computes five frames' features, the others one).
GFLOP/s = analytic convolution FLOPs (model config and input size; the
PWC cost volume included) / time. ``--train-step`` times forward + backward
+ Adam step of mode 'train' at ``--batch`` x ``--patch``.

OMP_NUM_THREADS is set from ``--threads`` before Jittor is imported.
Prints one JSON object (also written to ``--json`` if given).

One file: the parent and its ``--child`` processes are this one script and read
one configuration; it runs alone, with nothing of the test suite.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, cpu_seconds, emit, machine, peak_rss_mib, recipe_net  # noqa: E402 (bench/)
from flops import clip_flops, conv_flops, model_flops  # noqa: E402 (bench/)


def parse_args(argv=None):
    sys.path.insert(0, ROOT)
    from jittor_sbvsr.cli.infer import add_engine_flags  # imports no jittor (OMP_NUM_THREADS is set later)
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--lr-size', default='180x320', help='LR frame size HxW')
    p.add_argument('--frames', type=int, default=7, help='frames in the clip (every one restored)')
    p.add_argument('--threads', type=int, default=2, help='OMP_NUM_THREADS')
    p.add_argument('--runs', type=int, default=1, help='timed passes over the clip per configuration')
    add_engine_flags(p)  # --device, --tile (here: the tiled configuration's tile size), --tile_overlap
    p.set_defaults(tile=64)
    p.add_argument('--warmup', default='pass', choices=['pass', 'window'],
                   help='untimed warm-up: a whole pass over the clip (default) or its first window')
    p.add_argument('--configs', default='reuse,baseline,tiled',
                   help='comma list of reuse, baseline, tiled, unfused, layered')
    p.add_argument('--profile', action='store_true',
                   help='also time the model parts on one window and the share of oneDNN convolutions')
    p.add_argument('--train-step', action='store_true', help='time training steps instead of inference')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--patch', type=int, default=64, help='LR patch size of the training step')
    p.add_argument('--steps', type=int, default=3, help='timed training steps (after one untimed)')
    p.add_argument('--json', default=None, help='also write the JSON here')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------ clip ----

def make_clip(path, h, w, n_frames):
    """LR frames of a synthetic pan (numpy uint8 [T,h,w,3]) saved to ``path``."""
    import numpy as np
    sys.path.insert(0, ROOT)
    from jittor_sbvsr.data.images import read_frame
    from jittor_sbvsr.data.synthetic import make_demo_videos
    with tempfile.TemporaryDirectory() as d:
        dirs = make_demo_videos(d, n_videos=1, n_frames=n_frames, hr_size=(4 * h, 4 * w), seed=0)
        vdir = os.path.join(dirs['lr'], '000')
        frames = [read_frame(os.path.join(vdir, f)) for f in sorted(os.listdir(vdir))]
    np.save(path, np.stack(frames))


# ------------------------------------------------------------ one config ---

def run_configs(cfg):
    """In a child process: the engine configurations ``cfg['engines']`` over the clip.

    Each engine gets an untimed warm-up pass; then the timed passes of the
    engines alternate (A B A B ...), so that a change in the machine's load
    hits all of them alike.
    """
    import numpy as np
    import jittor_sbvsr  # noqa: F401  (before jittor)
    import jittor as jt
    from jittor_sbvsr import runtime
    from jittor_sbvsr.data.windows import window_indices
    from jittor_sbvsr.infer.engine import VideoSR
    from jittor_sbvsr.ops import fused_conv
    from jittor_sbvsr.ops.fused_conv import LAYOUTS
    device = runtime.select_device(cfg['device'])
    frames = list(np.load(cfg['clip']))
    windows = window_indices(len(frames), 5, border=True)
    h, w = frames[0].shape[:2]
    net = recipe_net()
    net.eval()
    jt.sync_all(True)
    rss_model = peak_rss_mib()
    engines, deploy_s = {}, {}
    for e in cfg['engines']:
        t0 = time.perf_counter()
        engines[e['name']] = VideoSR(net, reuse=e['reuse'], tile=e['tile'], overlap=cfg['overlap'],
                                     fused=e['name'] != 'unfused', compose=e['name'] != 'layered',
                                     winograd=e['name'] != 'direct',
                                     layout=e['name'] if e['name'] in LAYOUTS else 'auto')
        deploy_s[e['name']] = time.perf_counter() - t0
    res = {}
    for name, engine in engines.items():
        t0 = time.perf_counter()
        # warm-up: Jittor compiles a kernel for each new fused graph, and with
        # reuse the windows differ (5, 1 or 0 new frame features), so a whole pass
        for _ in engine.windows(frames, windows if cfg['warmup'] == 'pass' else windows[:1]):
            pass
        res[name] = {'warmup_s': round(time.perf_counter() - t0, 2),
                     # building the engine: weight snapshots, composition, fast paths' self-check
                     'deploy_s': round(deploy_s[name], 3),
                     'self_check_s': round(engine.model.probe_seconds, 3),
                     'paths': engine.model.paths}
    secs = {name: [] for name in engines}
    cpu = {name: 0.0 for name in engines}
    outs = {name: [] for name in engines}
    load0 = os.getloadavg()[0]
    for r in range(cfg['runs']):
        for name, engine in engines.items():
            c0 = cpu_seconds()
            for k, recons, _, sec in engine.windows(frames, windows):
                secs[name].append(sec)
                if r == 0 and name in cfg.get('save', {}):
                    outs[name].append(recons)
            cpu[name] += cpu_seconds() - c0
    load1 = os.getloadavg()[0]
    n_out = len(windows) * cfg['runs']
    for name, engine in engines.items():
        e, t = engine, secs[name]
        composed = e.model.paths.get('composed tail') == 'on'
        flops = clip_flops(h, w, windows, e.reuse, composed) * cfg['runs']
        tiles = e.tiles(h, w)
        res[name].update({
            'device': device, 'use_cuda': int(jt.flags.use_cuda), 'onednn': runtime.onednn_enabled(),
            'onednn_isa': fused_conv.onednn_isa() if fused_conv.available() else None,
            'reuse': e.reuse, 'layout': e.model.layout, 'compose': composed, 'tile': e.tile, 'tile_overlap': e.overlap if e.tile else None,
            'n_tiles': len(tiles),
            # reconstruction work of the tiles relative to the whole frame (overlaps are recomputed)
            'tile_area_factor': round(sum((y1 - y0) * (x1 - x0) for (y0, y1), (x0, x1) in tiles) / (h * w), 3),
            'windows': len(windows), 'runs': cfg['runs'],
            'window_s': [round(v, 3) for v in t],
            's_per_frame': round(statistics.median(t), 3),
            'mean_s_per_frame': round(sum(t) / n_out, 3),
            'fps': round(n_out / sum(t), 4),
            'cpu_s_per_frame': round(cpu[name] / n_out, 3),
            'gflop_per_frame': round(flops / n_out / 1e9, 1),
            'gflops_achieved': round(flops / sum(t) / 1e9, 1),
            # the process's peak: with several engines in one process, the largest of them
            'peak_rss_mib': peak_rss_mib(),
            'rss_after_model_mib': rss_model,
            'loadavg_1min_start_end': [round(load0, 2), round(load1, 2)],
        })
        if name in cfg.get('save', {}):
            np.save(cfg['save'][name], np.stack(outs[name]))
    if cfg.get('profile'):
        res['profile'] = profile_window(net, frames, windows[len(windows) // 2])
    return res


def _timed(fn, reps=2):
    import jittor as jt
    best, out = float('inf'), None
    for _ in range(reps):
        jt.sync_all(True)
        t0 = time.perf_counter()
        with jt.no_grad():
            out = fn()
            jt.sync(out if isinstance(out, list) else [out])
        jt.sync_all(True)
        best = min(best, time.perf_counter() - t0)
    return best, out


def profile_window(net, frames, idx):
    """Seconds and GFLOP/s of each part of one window, for the default engine, with
    direct convolutions in its fused chains (``--no_winograd``) and with Jittor's own
    convolutions (``--no_fused``), beside the machine's peaks.

    The parts are what a window of the default engine computes with reuse:
    one new frame's features and PWC-Net pyramid, four flow decoders, four
    warps, the fusion conv, the ResBlock trunk and the tail (best of 2 each).
    Peaks, measured in the same process: one 128->128 3x3 conv at the frame
    size through Jittor's op, through a one-block fused chain (direct and
    Winograd: FLOPs counted as direct's), and numpy's sgemm.
    """
    import jittor as jt
    from jittor_sbvsr.models.deploy import InferenceNet
    from jittor_sbvsr.ops import fused_conv
    engines = {'default': InferenceNet(net, warn=lambda line: None)}
    engines['no_winograd'] = InferenceNet(net, winograd=False, warn=lambda line: None)
    engines['unfused'] = InferenceNet(net, fused=False, warn=lambda line: None)
    out = {name: _profile_parts(m, frames, idx) for name, m in engines.items()}
    out['paths'] = engines['default'].paths
    out['peaks'] = _peaks(frames[0].shape[:2], fused_conv.available())
    out['oneDNN_share_unfused'] = _onednn_share(net, frames, idx)
    return out


def _peaks(hw, fused):
    import numpy as np
    import jittor as jt
    from jittor import nn
    from jittor_sbvsr.ops import fused_conv
    h, w = hw
    c = 128
    flops = conv_flops(c, c, 3, h * w)
    rng = np.random.RandomState(0)
    x = jt.array(rng.standard_normal((1, c, h, w)).astype(np.float32))
    wt = rng.standard_normal((2, c, c, 3, 3)).astype(np.float32) * 0.02
    bias = np.zeros((2, c), np.float32)
    peaks = {}
    s, _ = _timed(lambda: nn.conv2d(x, jt.array(wt[0]), jt.array(bias[0]), 1, 1), reps=3)
    peaks['jittor_conv3x3_128'] = round(flops / s / 1e9, 1)
    if fused:
        for alg in ('direct', 'auto', 'wino4'):
            s, _ = _timed(lambda: fused_conv.resblock_chain(x, wt, bias, 'auto', alg), reps=3)
            name = 'fused_chain_' + fused_conv.chain_algorithm((1, c, h, w), 'auto', alg)
            peaks[name] = round(2 * flops / s / 1e9, 1)
    a = rng.standard_normal((h * w, 9 * c)).astype(np.float32)
    bm = rng.standard_normal((9 * c, c)).astype(np.float32)
    best = float('inf')
    for _ in range(3):
        t0 = time.perf_counter()
        a @ bm
        best = min(best, time.perf_counter() - t0)
    peaks['numpy_sgemm_im2col_shape'] = round(2 * a.shape[0] * a.shape[1] * c / best / 1e9, 1)
    return peaks


def _profile_parts(model, frames, idx):
    import jittor as jt
    from jittor_sbvsr.data.windows import frames_to_input
    from jittor_sbvsr.ops.sampling import resize_bilinear
    net = model.net
    x = jt.array(frames_to_input([frames[i] for i in idx]))
    xs = [x[:, j] for j in range(5)]
    x.sync()
    h, w = frames[0].shape[:2]
    fl, flc = model_flops(h, w), model_flops(h, w, compose=model.paths.get('composed tail') == 'on')
    pyr_fl = fl['flow_parts']['extractor'] / 2
    parts = {}

    def rec(name, fn, flops):
        s, out = _timed(fn)
        parts[name] = {'s': round(s, 3), 'gflop': round(flops / 1e9, 1),
                       'gflops': round(flops / s / 1e9, 1) if flops else None}
        return out

    rec('kernel_net', lambda: net.kernel_net(jt.concat(xs, 1)), fl['kernel_net'])
    pyramids = {k: net.flow_net.pyramid(v) for k, v in enumerate(xs)}
    jt.sync([t for p in pyramids.values() for t in p])
    rec('pwc_pyramid_x1', lambda: net.flow_net.pyramid(xs[0]), pyr_fl)
    flows = rec('pwc_flows_x4 (pyramids given)',
                lambda: list(net.neighbour_flows(xs, pyramids=dict(pyramids), fast=model.flow_layers).values()),
                4 * (fl['flow'] - fl['flow_parts']['extractor']))
    feats = [model.frame_features(v) for v in xs]
    jt.sync(feats)
    rec('frame_features_x1', lambda: model.frame_features(xs[0]), fl['frame_features'])
    warped = rec('warp_x4', lambda: [model.align(feats[i], flows[j])
                                     for j, i in enumerate((0, 1, 3, 4))], 0)
    aligned = [warped[0], warped[1], feats[2], warped[2], warped[3]]
    trunk = rec('fusion+recons_trunk', lambda: model.trunk(jt.concat(aligned, 1)), fl['fusion'] + fl['recons_trunk'])
    rec('tail', lambda: model.tail(trunk), flc['composed_tail'] + flc['upsample'] + flc['out_conv'])
    rec('bilinear_base', lambda: resize_bilinear(xs[2], (h * 4, w * 4)), 0)
    total = sum(p['s'] for p in parts.values())
    for p in parts.values():
        p['share'] = round(p['s'] / total, 3)
    return {'parts': parts, 'sum_of_parts_s': round(total, 3)}


def _onednn_share(net, frames, idx):
    """oneDNN's share of the kernel time of one whole window run by Jittor's ops (no reuse)."""
    import jittor as jt
    from jittor_sbvsr.data.windows import frames_to_input
    x = jt.array(frames_to_input([frames[i] for i in idx]))
    xs = [x[:, j] for j in range(5)]
    jt.sync_all(True)
    jt.profiler.start(0, 0)
    try:
        with jt.no_grad():
            net.recons_forward(xs).sync()
        jt.sync_all(True)
    finally:
        jt.profiler.stop()
    rep = jt.profiler.report()
    hdr, rows = rep[0], rep[1:]
    ti = hdr.index('TotalTime')
    total = sum(float(r[ti]) for r in rows)
    conv = sum(float(r[ti]) for r in rows if r[0].startswith(('mkl_conv', 'cudnn_conv')))
    return round(conv / total, 3) if total else None


# ------------------------------------------------------------ train step ---

def run_train_step(args):
    import numpy as np
    import jittor_sbvsr  # noqa: F401
    import jittor as jt
    from jittor_sbvsr import runtime
    device = runtime.select_device(args.device)
    net = recipe_net()
    net.train()
    try:
        from jittor_sbvsr.trainer.losses import SelfBlindLoss
        loss_fn, loss_name = SelfBlindLoss(), 'jittor_sbvsr.trainer.losses.SelfBlindLoss'
    except ImportError:
        def loss_fn(out):
            t = (out['recons_down'] - out['input']).abs().mean() + (out['input_cycle'] - out['input']).abs().mean()
            return t, {}
        loss_name = 'L1(recons_down, input) + L1(input_cycle, input)'
    try:
        from jittor_sbvsr.trainer.optim import make_optimizer
        opt, opt_name = make_optimizer(net, 1e-4), 'trainer.optim.make_optimizer (TorchAdam, 8 groups)'
    except ImportError:
        opt, opt_name = jt.optim.Adam(net.parameters(), 1e-4), 'jt.optim.Adam'
    rng = np.random.RandomState(0)
    x = jt.array(rng.rand(args.batch, 5, 3, args.patch, args.patch).astype(np.float32))

    def step():
        out, _ = net({'x': x, 'mode': 'train'})
        total, _ = loss_fn(out)
        opt.step(total)
        return float(total.item())

    t0 = time.perf_counter()
    step()
    jt.sync_all(True)
    warm = time.perf_counter() - t0
    times, losses = [], []
    for _ in range(args.steps):
        jt.sync_all(True)
        t0 = time.perf_counter()
        losses.append(step())
        jt.sync_all(True)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        'mode': 'train_step', 'device': device, 'use_cuda': int(jt.flags.use_cuda),
        'onednn': runtime.onednn_enabled(), 'threads': args.threads, 'batch': args.batch,
        'patch': args.patch, 'loss': loss_name, 'optimizer': opt_name,
        'warmup_s': round(warm, 2), 'step_s': [round(t, 3) for t in times], 's_per_step': round(med, 3),
        'samples_per_s': round(args.batch / med, 3), 'loss_values': [round(v, 5) for v in losses],
        'peak_rss_mib': peak_rss_mib(), 'machine': machine(),
        'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'command': 'python ' + ' '.join(sys.argv),
    }


# ------------------------------------------------------------------ main ----

def child_main(args):
    cfg = json.loads(args.child)
    print('BENCH_RESULT ' + json.dumps(run_configs(cfg)), flush=True)


def spawn(cfg, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), '--threads', str(threads), '--child', json.dumps(cfg)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, encoding='utf-8')
    for line in r.stdout.splitlines():
        if line.startswith('BENCH_RESULT '):
            return json.loads(line[len('BENCH_RESULT '):])
    raise RuntimeError(f'configuration {cfg} failed (rc {r.returncode}):\n{r.stderr[-4000:]}')


def psnr(a, b):
    import numpy as np
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float('inf') if mse == 0 else 10 * math.log10(1.0 / mse)


def inference_main(args):
    import numpy as np
    h, w = (int(v) for v in args.lr_size.lower().split('x'))
    configs = [c.strip() for c in args.configs.split(',') if c.strip()]
    out = {'mode': 'inference', 'lr_size': [h, w], 'hr_size': [4 * h, 4 * w], 'frames': args.frames,
           'threads': args.threads, 'weights': 'recipe (seed 1234)', 'clip': 'data/synthetic.py pan, seed 0',
           'machine': machine(), 'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
           'command': 'python ' + ' '.join(sys.argv),
           'gflop_model_parts': {k: round(v / 1e9, 2) for k, v in model_flops(h, w).items() if k != 'flow_parts'},
           'gflop_composed_tail_parts': {k: round(model_flops(h, w, compose=True)[k] / 1e9, 2)
                                         for k in ('composed_tail', 'upsample', 'out_conv')},
           'configs': {}}
    with tempfile.TemporaryDirectory() as d:
        clip = os.path.join(d, 'clip.npy')
        make_clip(clip, h, w, args.frames)
        save = {name: os.path.join(d, f'{name}.npy') for name in ('reuse', 'tiled', 'unfused', 'layered', 'direct')}
        # the ablations alternate in one process (same load); tiled alone (its own peak RSS)
        ablations = ('reuse', 'baseline', 'unfused', 'direct', 'layered', 'nhwc', 'nChw8c', 'nChw16c')
        groups = [[n for n in ablations if n in configs],
                  [n for n in ('tiled',) if n in configs]]
        for group in [g for g in groups if g]:
            cfg = {'clip': clip, 'device': args.device, 'runs': args.runs, 'warmup': args.warmup,
                   'overlap': args.tile_overlap, 'profile': args.profile and 'reuse' in group,
                   'engines': [{'name': n, 'reuse': n != 'baseline', 'tile': args.tile if n == 'tiled' else 0}
                               for n in group],
                   'save': {n: save[n] for n in group if n in save}}
            print(f'[bench] {"+".join(group)} ...', file=sys.stderr, flush=True)
            res = spawn(cfg, args.threads)
            if 'profile' in res:
                out['profile'] = res.pop('profile')
            out['configs'].update(res)
            for n in group:
                print(f"[bench] {n}: {res[n]['s_per_frame']} s/frame", file=sys.stderr, flush=True)
        c = out['configs']
        if 'reuse' in c:
            r = c['reuse']
            out['s_per_frame'] = r['s_per_frame']
            out['fps'] = r['fps']
            out['gflops_achieved'] = r['gflops_achieved']
            out['flags'] = {'onednn': r['onednn'], 'reuse': True, 'tile': 0, 'device': r['device'],
                            'use_cuda': r['use_cuda'], 'threads': args.threads}
            if (h, w) == (180, 320):  # the 10 s per output frame target at 180x320 (bench/RESULTS.md)
                out['target_s_per_frame'] = 10.0
                out['meets_target'] = r['s_per_frame'] <= 10.0
        if 'reuse' in c and 'baseline' in c:
            out['speedup_vs_no_reuse'] = round(c['baseline']['s_per_frame'] / c['reuse']['s_per_frame'], 3)
            out['speedup_vs_no_reuse_mean'] = round(
                c['baseline']['mean_s_per_frame'] / c['reuse']['mean_s_per_frame'], 3)
        for other in ('unfused', 'layered', 'direct'):
            if 'reuse' in c and other in c:
                a, b = np.load(os.path.join(d, 'reuse.npy')), np.load(os.path.join(d, f'{other}.npy'))
                out[f'default_vs_{other}'] = {
                    'speedup': round(c[other]['s_per_frame'] / c['reuse']['s_per_frame'], 3),
                    'max_abs_diff': float(np.abs(a - b).max()),
                    'psnr_db_min': round(min(psnr(x, y) for x, y in zip(a, b)), 2)}
        if 'reuse' in c and 'tiled' in c:
            a, b = np.load(os.path.join(d, 'reuse.npy')), np.load(os.path.join(d, 'tiled.npy'))
            ps = [psnr(x, y) for x, y in zip(a, b)]
            out['tiled_vs_untiled'] = {'tile': args.tile, 'overlap': args.tile_overlap,
                                       'psnr_db_min': round(min(ps), 2), 'psnr_db_mean': round(sum(ps) / len(ps), 2),
                                       'max_abs_diff': float(np.abs(a - b).max()),
                                       'peak_rss_mib_untiled': c['reuse']['peak_rss_mib'],
                                       'peak_rss_mib_tiled': c['tiled']['peak_rss_mib'],
                                       'tile_area_factor': c['tiled']['tile_area_factor'],
                                       'time_ratio_tiled_over_untiled': round(
                                           c['tiled']['s_per_frame'] / c['reuse']['s_per_frame'], 3)}
    out['machine']['loadavg_at_end'] = os.getloadavg() if hasattr(os, 'getloadavg') else None
    return out


def main(argv=None):
    args = parse_args(argv)
    os.environ['OMP_NUM_THREADS'] = str(args.threads)  # before any jittor import
    sys.path.insert(0, ROOT)
    if args.child:
        return child_main(args)
    emit(run_train_step(args) if args.train_step else inference_main(args), args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())

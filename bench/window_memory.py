#!/usr/bin/env python
"""Peak RSS of inference windows against frame and tile size; not a test.

    python bench/window_memory.py --sizes 48x64,96x128,135x240,180x320 --tiled 180x320:64,180x320:96

Each configuration runs in its own process: the recipe weights (weights/recipe.py),
the default engine (infer/engine.py's VideoSR), then ``--windows`` border
windows of a random smooth clip of that LR size, untiled or with the tile
after the colon. Reports the process's peak RSS (``resource.getrusage``)
during the engine's set-up (Jittor, weights, the engine's self-checks), its
RSS after it (``base``: the fixed overhead the budget comes on top of), the
peak RSS of the windows alone (VmHWM reset after set-up) and that less the
base (``window_mib``), in MiB, plus the engine's memory model's estimate for
the same window (infer/engine.py: window_bytes). Linux only. Prints one
JSON object.

    python bench/window_memory.py --cli 540x960:2:2G

runs inference.py itself (recipe weights, ``--border``, no outputs) on a
clip of that many frames (bench/stream_rss.py's test pattern) under that
``--max_memory``, and reports its peak RSS (wait4) and the tile it chose.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mib(key):
    """VmRSS (now) or VmHWM (peak since the last reset_peak) of this process, MiB (Linux)."""
    with open('/proc/self/status', encoding='utf-8') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) / 1024
    return None


def reset_peak():
    """Start VmHWM again from the current RSS (Linux >= 4.0: clear_refs 5)."""
    with open('/proc/self/clear_refs', 'w', encoding='utf-8') as f:
        f.write('5')


def child(h, w, tile, n_windows, overlap):
    sys.path.insert(0, ROOT)
    import numpy as np
    import jittor_sbvsr  # noqa: F401  (before jittor)
    import jittor as jt
    from scipy import ndimage
    from jittor_sbvsr import runtime
    from jittor_sbvsr.data.windows import window_indices
    from jittor_sbvsr.infer.engine import VideoSR
    from jittor_sbvsr.infer.memory_plan import window_bytes
    from jittor_sbvsr.weights.recipe import recipe_state
    from jittor_sbvsr.models import PWC_Recons
    runtime.select_device('cpu')
    net = PWC_Recons()
    net.load_parameters(recipe_state({k: v.shape for k, v in net.state_dict().items()}, seed=1234))
    net.eval()
    engine = VideoSR(net, tile=tile, overlap=overlap)
    jt.sync_all(True)
    jt.gc()
    setup_peak, base = peak_mib(), status_mib('VmRSS')
    reset_peak()
    rng = np.random.RandomState(0)
    frames = [np.clip(ndimage.uniform_filter(rng.uniform(0, 255, (h, w, 3)), (5, 5, 1)), 0, 255).astype(np.uint8)
              for _ in range(n_windows + 2)]
    windows = window_indices(len(frames), 5, border=True)[:n_windows]
    t0 = time.perf_counter()  # host time: the loop below syncs (engine.windows)
    for _ in engine.windows(frames, windows):
        pass
    return {'lr': f'{h}x{w}', 'tile': tile, 'tiles': len(engine.tiles(h, w)), 'windows': n_windows,
            'setup_peak_mib': setup_peak, 'base_rss_mib': base, 'window_peak_mib': status_mib('VmHWM'),
            'window_mib': status_mib('VmHWM') - base, 'peak_mib': peak_mib(),
            'model_mib': window_bytes(h, w, tile, overlap) / 2 ** 20,
            'seconds': time.perf_counter() - t0}


def cli_run(spec):
    """inference.py on an H x W clip of n frames under --max_memory: peak RSS, seconds, stderr lines."""
    import tempfile
    sys.path[:0] = [ROOT, os.path.join(ROOT, 'bench')]
    from stream_rss import make_clip
    from jittor_sbvsr.weights.checkpoint import save_state_atomic
    from jittor_sbvsr.weights.recipe import recipe_state
    from jittor_sbvsr.models import PWC_Recons
    size, n, budget = spec.split(':')
    h, w = map(int, size.split('x'))
    with tempfile.TemporaryDirectory() as d:
        weights = os.path.join(d, 'recipe.pkl')
        save_state_atomic(recipe_state({k: v.shape for k, v in PWC_Recons().state_dict().items()}), weights)
        clip = os.path.join(d, 'clip.mp4')
        make_clip(clip, int(n), h, w)
        cmd = [sys.executable, os.path.join(ROOT, 'inference.py'), '--input_path', clip, '--model_path', weights,
               '--result_path', os.path.join(d, 'out'), '--infer_flag', 'mem', '--no_save_image', '--border',
               '--max_memory', budget]
        t0 = time.perf_counter()  # host time: a whole child process
        with open(os.path.join(d, 'stderr.txt'), 'w+', encoding='utf-8') as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            secs = time.perf_counter() - t0  # host time
            err.seek(0)
            lines = [ln.rstrip() for ln in err if ln.strip() and '\r' not in ln][-8:]
        if os.waitstatus_to_exitcode(status):
            sys.exit('inference failed:\n' + '\n'.join(lines))
    return {'lr': size, 'frames': int(n), 'max_memory': budget, 'peak_rss_mib': round(usage.ru_maxrss / 1024, 1),
            'seconds': round(secs, 1), 'stderr_tail': lines}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', default='48x64,96x128,135x240,180x320', help='untiled LR sizes HxW')
    ap.add_argument('--tiled', default='180x320:64,180x320:96', help='HxW:tile, tiled')
    ap.add_argument('--windows', type=int, default=2)
    ap.add_argument('--overlap', type=int, default=16)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--cli', default=None, help='HxW:frames:budget: time inference.py under --max_memory')
    ap.add_argument('--child', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.cli:
        os.environ['OMP_NUM_THREADS'] = str(a.threads)
        print(json.dumps(cli_run(a.cli), indent=1))
        return
    if a.child:
        h, w, tile = map(int, a.child.split(','))
        print(json.dumps(child(h, w, tile, a.windows, a.overlap)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    configs = [s + ':0' for s in a.sizes.split(',') if s] + [s for s in a.tiled.split(',') if s]
    rows = []
    for c in configs:
        size, tile = c.split(':')
        h, w = size.split('x')
        out = subprocess.run([sys.executable, __file__, '--child', f'{h},{w},{tile}', '--windows', str(a.windows),
                              '--overlap', str(a.overlap)], env=env, capture_output=True, encoding='utf-8')
        if out.returncode:
            sys.exit(f'{c} failed:\n{out.stderr[-3000:]}')
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({'threads': a.threads, 'overlap': a.overlap, 'runs': rows}, indent=1))


if __name__ == '__main__':
    main()

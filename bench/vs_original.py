#!/usr/bin/env python
"""Time per output frame against the original PyTorch code, side by side; not a test.

    python bench/vs_original.py --torch-python VENV/bin/python --harness HARNESS.py \
        --upstream CODE_DIR --lr-size 180x320 --threads 2 --rounds 2

The original code runs in its own PyTorch venv through a harness that
imports it (``--harness``: a script with a ``time`` command printing JSON
with ``median_s`` for one 5-frame window at ``--lr-size``; ``--upstream``:
the original repository's ``code/`` folder). This project runs through
bench/infer_speed.py (``--configs``, each frame of a 7-frame clip restored).
The two alternate, round by round, so that a change in the shared machine's
load hits both; each round's ratio is this project's s/frame over the
original's s/window (one window = one output frame), and the result is the
median of the rounds' ratios. Prints one JSON object (also to ``--json``).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'bench'))
from common import emit  # noqa: E402


def _json_of(cmd, env):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, encoding='utf-8')
    start = r.stdout.find('{')
    if r.returncode != 0 or start < 0:
        raise SystemExit(f'failed (rc {r.returncode}): {" ".join(cmd)}\n{r.stderr[-3000:]}')
    return json.loads(r.stdout[start:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--torch-python', required=True, help="the original code's venv's python")
    p.add_argument('--harness', required=True, help='the timing harness script (a time command)')
    p.add_argument('--upstream', required=True, help="the original repository's code/ folder")
    p.add_argument('--lr-size', default='180x320')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--runs', type=int, default=3, help="the original's timed windows per round")
    p.add_argument('--configs', default='reuse', help='bench/infer_speed.py configurations')
    p.add_argument('--json', default=None)
    args = p.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    rounds = []
    with tempfile.TemporaryDirectory() as d:
        for k in range(args.rounds):
            print(f'[vs_original] round {k + 1}: original ...', file=sys.stderr, flush=True)
            orig = _json_of([args.torch_python, args.harness, 'time', '--upstream', args.upstream,
                             '--lr-size', args.lr_size, '--threads', str(args.threads), '--runs', str(args.runs)], env)
            print(f'[vs_original] round {k + 1}: original {orig["median_s"]:.2f} s/window; this project ...',
                  file=sys.stderr, flush=True)
            out = os.path.join(d, f'ours{k}.json')
            subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'infer_speed.py'), '--lr-size', args.lr_size,
                            '--threads', str(args.threads), '--configs', args.configs, '--json', out],
                           check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
            with open(out, encoding='utf-8') as fh:
                ours = json.load(fh)
            per = {n: c['s_per_frame'] for n, c in ours['configs'].items()}
            rounds.append({'original_s_per_window': round(orig['median_s'], 3), 'original_times_s': orig['times_s'],
                           'original_loadavg': [orig['loadavg_before'][0], orig['loadavg_after'][0]],
                           'ours_s_per_frame': per,
                           'ours_loadavg': ours['machine']['loadavg_at_start'][:1] + ours['machine']['loadavg_at_end'][:1],
                           'ratio': {n: round(v / orig['median_s'], 3) for n, v in per.items()},
                           'onednn_isa': {n: c.get('onednn_isa') for n, c in ours['configs'].items()},
                           'paths': {n: c.get('paths') for n, c in ours['configs'].items()}})
            print(f'[vs_original] round {k + 1}: ratio {rounds[-1]["ratio"]}', file=sys.stderr, flush=True)
    names = rounds[0]['ratio']
    res = {'lr_size': args.lr_size, 'threads': args.threads, 'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
           'isa_cap': os.environ.get('DNNL_MAX_CPU_ISA'), 'command': 'python ' + ' '.join(sys.argv),
           'ratio_median': {n: round(statistics.median(r['ratio'][n] for r in rounds), 3) for n in names},
           'rounds': rounds}
    emit(res, args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())

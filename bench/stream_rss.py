#!/usr/bin/env python
"""Peak RSS of inference.py on a short and a long video file of one size; not a test.

    python bench/stream_rss.py --lr-size 64x96 --frames 20,200

Inference streams (frames decoded as the window needs them, each output
written when done), so the long clip's peak should exceed the short one's by
about a frame, not by a video. Each clip (ffmpeg's testsrc2 pattern, H.264,
with audio) runs in its own inference.py process with the recipe weights and
--no_save_image; the peak is that process's ru_maxrss from wait4 (its ffmpeg
children included only where larger). Prints one JSON object.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_clip(path, n, h, w, fps=25):
    from imageio_ffmpeg import get_ffmpeg_exe
    subprocess.run([get_ffmpeg_exe(), '-v', 'error', '-y', '-f', 'lavfi', '-i', f'testsrc2=size={w}x{h}:rate={fps}',
                    '-f', 'lavfi', '-i', 'sine=frequency=440', '-t', str(n / fps), '-frames:v', str(n),
                    '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-c:a', 'aac', path], check=True)


def peak_rss(cmd):
    """(peak RSS in MiB, seconds) of one child process."""
    t0 = time.perf_counter()  # host time: a child process, waited for
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode('utf-8', 'replace')
    if proc.returncode:
        sys.exit(f'inference failed ({proc.returncode}):\n{err[-3000:]}')
    return usage.ru_maxrss / 1024, time.perf_counter() - t0  # host time: a child process, waited for


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--lr-size', default='64x96', help='HxW of the LR clips')
    p.add_argument('--frames', default='20,200', help='clip lengths, comma-separated')
    a = p.parse_args()
    h, w = map(int, a.lr_size.split('x'))
    from common import save_recipe
    out = {'lr_size': [h, w], 'runs': []}
    with tempfile.TemporaryDirectory() as d:
        weights = os.path.join(d, 'recipe.pkl')
        save_recipe(weights)
        for n in map(int, a.frames.split(',')):
            clip = os.path.join(d, f'clip{n}.mp4')
            make_clip(clip, n, h, w)
            cmd = [sys.executable, os.path.join(ROOT, 'inference.py'), '--input_path', clip, '--model_path', weights,
                   '--result_path', os.path.join(d, 'out'), '--infer_flag', f'n{n}', '--no_save_image']
            rss, secs = peak_rss(cmd)
            out['runs'].append({'frames': n, 'peak_rss_mib': round(rss, 1), 'seconds': round(secs, 1)})
            print(json.dumps(out['runs'][-1]), file=sys.stderr)
    print(json.dumps(out))


if __name__ == '__main__':
    main()

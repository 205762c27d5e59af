"""The host worker's scorer (infer/scorer.py): PSNR/SSIM at SCHED_IDLE, never a stalled run.

Its answers are psnr_ssim's; when the main process waits (``urgent``), when
the scorer never answers (``_never_answers`` in its place: a scorer that gets
no CPU on a machine busy with other programs) or when it is gone, the worker scores
the frame itself, with the same numbers. A whole run whose scorer never
answers: tests/test_inference_resume.py.
"""
import multiprocessing
import os
import sys
import time

import numpy as np
import pytest

from jittor_sbvsr.infer import scorer
from jittor_sbvsr.metrics.psnr_ssim import psnr_ssim

pytestmark = pytest.mark.skipif(not scorer.available(), reason='no SCHED_IDLE on this OS (no scorer)')


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    gts = rng.integers(0, 256, (n, 40, 56, 3), dtype=np.uint8)
    srs = np.clip(gts.astype(int) + rng.integers(-9, 10, gts.shape), 0, 255).astype(np.uint8)
    return list(zip(srs, gts))


def _start():
    return scorer.start(multiprocessing.get_context('spawn'))


def _never_answers(tasks, results, skip):
    """A scorer that receives its frames and never answers (started in scorer._serve's place)."""
    while True:
        try:
            tasks.recv()
        except (EOFError, OSError):
            return


def _policy(pid, timeout=10):
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    t0 = time.time()
    while os.sched_getscheduler(pid) != os.SCHED_IDLE and time.time() - t0 < timeout:
        time.sleep(0.05)
    return os.sched_getscheduler(pid)


def test_the_scorer_answers_psnr_ssim_at_idle_priority():
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    proc, ends = _start()
    try:
        assert _policy(proc.pid) == os.SCHED_IDLE
        sc = scorer.Scorer(ends)
        frames = _frames(4)
        answered = [sc.score(sr, gt, urgent=lambda: False) for sr, gt in frames]  # the scorer's answers
        assert answered == [psnr_ssim(sr, gt) for sr, gt in frames]
        assert sc._skip.value == 0  # none of them scored in the worker
        sc.close()
        proc.join(10)
        assert proc.exitcode == 0  # its tasks' end closed: it stops by itself
    finally:
        proc.terminate()  # not kill(): a Jittor that an earlier test imported ends pytest on a SIGKILLed child


def test_a_scorer_that_never_answers_gives_way_once_the_main_process_waits(monkeypatch):
    monkeypatch.setattr(scorer, '_serve', _never_answers)
    proc, ends = _start()
    try:
        sc = scorer.Scorer(ends)
        sr, gt = _frames(1, seed=4)[0]
        assert sc.score(sr, gt, urgent=lambda: True) == psnr_ssim(sr, gt)  # waited on already: not sent
        assert sc._outbox.empty()
        for n, (sr, gt) in enumerate(_frames(5, seed=1), 2):  # the outbox fills up too: the later frames go nowhere
            t0 = time.time()
            got = sc.score(sr, gt, urgent=lambda: time.time() - t0 > 0.2)
            assert got == psnr_ssim(sr, gt) and sc._skip.value == n  # scored here
            assert time.time() - t0 < 5
        sc.close()
    finally:
        proc.terminate()  # not kill(): a Jittor that an earlier test imported ends pytest on a SIGKILLed child


def test_a_scorer_that_is_gone_is_replaced_by_the_worker():
    proc, ends = _start()
    sc = scorer.Scorer(ends)
    proc.terminate()
    proc.join()
    for sr, gt in _frames(3, seed=2):
        assert sc.score(sr, gt, urgent=lambda: False) == psnr_ssim(sr, gt)  # never returns if it waits on
    sc.close()

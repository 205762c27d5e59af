"""PSNR/SSIM on the CPU the network leaves idle: the host worker's scorer, a process of its own.

Why: on a CPU run the network's threads fill every core, and the host
worker's scoring (most of its work) takes its CPU time from them, with
interest: a network thread that wakes at a barrier waits for the worker's
time slice, even at ``nice`` 10 (bench/RESULTS.md). The scorer runs at
Linux's SCHED_IDLE: it gets a core only when nothing else wants it, and a
waking network thread takes it back at once.

SCHED_IDLE alone could stall a run: on a machine kept busy by other
programs an idle-priority process barely runs, and an unprivileged process
cannot leave SCHED_IDLE again. So the host worker races it: while the main
process is not waiting for the worker, the worker waits for the scorer's
answer; once the main process says it waits (host.py, ``wanted``), the
worker scores the frame itself at its own priority and the scorer skips it.
Both compute :func:`psnr_ssim`: the same numbers whoever answers.

Where there is no SCHED_IDLE (Windows, macOS) there is no scorer: the
worker scores every frame itself.
"""
import os
import queue
import sys
import threading

from ..metrics.psnr_ssim import psnr_ssim

POLL_S = 0.02  # how often the worker looks for the scorer's answer and at the main process's waiting


def available():
    return hasattr(os, 'SCHED_IDLE') and hasattr(os, 'sched_setscheduler')


def start(ctx):
    """The scorer process, started by the main process (the host worker, a daemon, may not have
    children of its own), and the ends of it that the worker's :class:`Scorer` takes."""
    task_in, tasks = ctx.Pipe(duplex=False)
    results, result_out = ctx.Pipe(duplex=False)
    skip = ctx.RawValue('q', 0)  # the scorer skips the frames up to this number
    proc = ctx.Process(target=_serve, args=(task_in, result_out, skip), daemon=True, name='sbvsr-scorer')
    proc.start()
    task_in.close()
    result_out.close()
    return proc, (tasks, results, skip)


class Scorer:
    """The worker's end of the scorer: ``score`` gives a frame's (PSNR, SSIM), the scorer's or,
    once ``urgent()`` says the main process waits, computed here."""

    def __init__(self, ends):
        tasks, self._results, self._skip = ends
        # sends go through a thread: a starved scorer that reads nothing never blocks the worker;
        # the bounded queue keeps its backlog to two frames (beyond: scored here)
        self._outbox = queue.Queue(maxsize=2)
        self._alive = True
        self._n = 0
        threading.Thread(target=self._send, args=(tasks,), daemon=True).start()

    def score(self, sr, gt, urgent):
        self._n += 1
        n = self._n
        if self._alive and not urgent():  # the main process waits already: not sent, scored here
            try:
                self._outbox.put_nowait((n, sr, gt))
            except queue.Full:
                pass
            else:
                while self._alive and not urgent():
                    row = self._answer(n)
                    if row is not None:
                        return row
        self._skip.value = n
        return psnr_ssim(sr, gt)

    def _answer(self, n):
        """Frame n's (PSNR, SSIM) if the scorer has sent it within POLL_S (older answers dropped)."""
        try:
            while self._results.poll(POLL_S):
                k, *row = self._results.recv()
                if k == n:
                    return tuple(row)
        except (EOFError, OSError):
            self._alive = False  # it ended: every frame is scored here from now on
        return None

    def _send(self, tasks):
        while True:
            item = self._outbox.get()
            if item is None:
                break
            try:
                tasks.send(item)
            except OSError:
                self._alive = False
                break
        tasks.close()  # the scorer's end of the run: it stops

    def close(self):
        self._alive = False
        try:
            self._outbox.put_nowait(None)
        except queue.Full:  # the sender waits on a scorer that reads nothing: the main process ends it
            pass


def _serve(tasks, results, skip):
    """The scorer: frames from ``tasks`` scored at the lowest priority, unless skipped."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides what Ctrl-C does
    if sys.platform != 'win32':  # started only where there is SCHED_IDLE (available)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while True:
        try:
            n, sr, gt = tasks.recv()
        except (EOFError, OSError):
            return
        if n <= skip.value:
            continue
        row = psnr_ssim(sr, gt)
        if n > skip.value:
            try:
                results.send((n, *row))
            except OSError:
                return

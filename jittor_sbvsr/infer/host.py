"""Scoring and writing beside the network: the host worker, a process of its own.

Why a process and not a thread: Jittor keeps the GIL while it computes (its
bindings never release it: a Python thread beside a forward pass ran 0.6% of
the loop iterations it runs alone), so a thread would wait for the network
instead of working beside it. The worker imports no Jittor; it receives each
SR frame (uint8) as soon as the network made it and does the host work of
outputs.py there (ground truth, PSNR/SSIM, PNG, kernel, video encoder feed),
in order, one video after another, while the main process runs the next
windows. Its PSNR/SSIM go to the scorer (scorer.py: a process at idle
priority, so that scoring takes no CPU from a network that has work) until
the main process says it waits (a ``wait`` message, sent before each wait
for a result): the worker then scores that frame itself.

:class:`Host` is the main process's side. ``frame`` sends a frame and
hands on the results that are ready (``(k, psnr, ssim)``, in the order the
frames were sent); at most ``depth`` frames are in flight, so memory stays
bounded and a slow disk slows the run instead of filling memory. An error in
the worker (a full disk, a ground-truth frame of the wrong size) is raised
in the main process as it was raised there (UserError: one line, exit 2),
at the frame it stopped at. Ctrl-C reaches the worker too (a terminal sends
it to the process group); the worker ignores it and ends when the main
process says so (``abort``: it finishes the frame it is writing, atomic
writes: complete or absent, and removes its encoder's temporary file). When
the main process dies without a word (kill -9: its pipe closes), the worker
first finishes and records the frames it was sent, so that a resumed run
computes again only the window the network was on (resume.py).
"""
import multiprocessing
import os
import queue
import signal
import threading

from . import scorer

NICE = 10  # the worker's scheduling priority below the main process's (Unix)
DEPTH = 2  # frames in flight: the network is then never waiting for a frame's host work


class WorkerGone(RuntimeError):
    """The host worker ended without a word (killed, out of memory)."""


class Host:
    """The main process's end of the host worker; a context manager (an exception aborts it)."""

    def __init__(self, depth=DEPTH, score=True):
        ctx = multiprocessing.get_context('spawn')  # nothing of Jittor's threads or locks is inherited
        task_in, self._tasks = ctx.Pipe(duplex=False)  # (receive end, send end)
        self._results, result_out = ctx.Pipe(duplex=False)
        # ``score``: frames will be scored; then the scorer (scorer.py) where the OS has SCHED_IDLE
        self._scorer, ends = scorer.start(ctx) if score and scorer.available() else (None, None)
        self._proc = ctx.Process(target=_serve, args=(task_in, result_out, ends), daemon=True, name='sbvsr-host')
        self._depth, self._pending, self._received = depth, 0, 0
        self._proc.start()
        for end in (task_in, result_out) + (ends[:2] if ends else ()):
            end.close()  # the worker's (and the scorer's) now

    def open(self, spec):
        """The next video's outputs (outputs.OutputSpec)."""
        self._send(('open', spec))

    def frame(self, k, t, stem, sr, kernel, secs, done):
        """Send window k's SR frame (of frame t, named ``stem``; ``secs``: its network time); ``done``
        is called with each result ready by now, as it comes: a worker's error that follows a
        result is raised after that result's ``done``, so no finished frame goes unrecorded."""
        self._send(('frame', k, t, stem, sr, kernel, secs))
        self._pending += 1
        while self._pending and (self._pending > self._depth or self._results.poll()):
            done(self._receive())

    def close(self, done=None):
        """The video's last results (to ``done``; None: no frame was sent), once its outputs (the
        mp4 too) are complete; returns the notes of its mp4's writer (outputs.VideoOutputs.close)."""
        self._send(('close',))
        self._pending += 1
        while self._pending > 1:
            result = self._receive()
            if done is None:
                raise RuntimeError(f'Host.close: a frame result {result} with no one to take it')
            done(result)
        return self._receive()[0]  # the worker's 'closed'

    def _send(self, msg):
        try:
            self._tasks.send(msg)
        except (BrokenPipeError, ConnectionResetError):
            self._receive()  # its error, if it sent one
            raise WorkerGone('the output worker has ended') from None

    def _receive(self):
        if not self._results.poll():  # about to wait: the worker then scores that frame itself (scorer.py)
            self._send(('wait', self._received + 1))
        try:
            kind, *rest = self._results.recv()
        except (EOFError, OSError):
            raise WorkerGone(f'the output worker has ended (exit code {self._proc.exitcode})') from None
        self._pending -= 1
        self._received += 1
        if kind == 'error':
            raise rest[0]
        return tuple(rest)

    def stop(self):
        """End the worker once everything sent is done."""
        self._end('stop')

    def abort(self):
        """End the worker now: the file it writes is finished, the rest given up."""
        self._end('abort')

    def _end(self, how):
        try:
            self._tasks.send((how,))
        except OSError:
            pass
        self._proc.join(60)
        for proc in (self._proc, self._scorer):
            if proc is not None and proc.is_alive():
                proc.terminate()  # a worker stuck for a minute; the scorer: its work is no longer wanted
            if proc is not None:
                proc.join()
        self._tasks.close()
        self._results.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.stop()
        else:
            self.abort()
        return False


def _serve(tasks, results, scorer_ends):
    """The worker: messages from ``tasks`` done in order, results to ``results``; frames scored by
    the scorer whose ends are ``scorer_ends`` (None: here)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides what Ctrl-C does
    if hasattr(os, 'nice'):  # the network's threads first: the host work fills their gaps (not on Windows)
        os.nice(NICE)
    from ..metrics.psnr_ssim import psnr_ssim
    from .outputs import VideoOutputs
    inbox, aborted = queue.Queue(), threading.Event()
    wanted, told = [0], [0]  # the result the main process waits for; the results sent
    sc = scorer.Scorer(scorer_ends) if scorer_ends else None

    def score(sr, gt):
        if sc is None:
            return psnr_ssim(sr, gt)
        return sc.score(sr, gt, urgent=lambda: wanted[0] > told[0])

    def receive():  # the main process's sends never wait for the work (its pipe is always read)
        while True:
            try:
                msg = tasks.recv()
            except Exception:  # the main process is gone (kill -9; a message may be cut): what came is done
                msg = ('stop',)
            if msg[0] == 'wait':
                wanted[0] = max(wanted[0], msg[1])
                continue
            if msg[0] == 'abort':
                aborted.set()
            if msg[0] in ('abort', 'stop'):  # (also a dead main process's): no frame waits for the scorer
                wanted[0] = float('inf')
            inbox.put(msg)
            if msg[0] in ('abort', 'stop'):
                return

    def tell(msg):
        told[0] += 1
        try:
            results.send(msg)
        except OSError:  # the main process is gone: the outputs and the record are what counts
            pass
    threading.Thread(target=receive, daemon=True).start()
    out, failed = None, False
    try:
        while True:
            msg = inbox.get()
            if aborted.is_set() or msg[0] in ('abort', 'stop'):
                break
            if failed:
                continue  # after an error: only the main process's stop or abort counts
            try:
                if msg[0] == 'open':
                    out = VideoOutputs(msg[1], score)
                elif msg[0] == 'frame':
                    k = msg[1]
                    tell(('row', k, *out.frame(*msg[1:])))
                elif msg[0] == 'close':
                    out, done = None, out
                    tell(('closed', done.close()))
            except Exception as e:
                failed = True
                tell(('error', _picklable(e)))
    finally:
        if out is not None:
            out.abort()
        if sc is not None:
            sc.close()


def _picklable(e):
    """``e``, or a RuntimeError with its text where it cannot travel between processes."""
    import pickle
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f'{type(e).__name__}: {e}')

"""inference.py with one fault a test chooses: ``python tests/fault_run.py FAULT <inference flags>``.

The fault is put in by replacing a function of the package in the process
that should fail; the package itself has no test hooks. The run's worker and
scorer are started by multiprocessing's spawn, which imports this file (as
``__mp_main__``, with the same argv) in each of them before their work, so
the code at the top level below runs in every process of the run, and each
process picks its own part by its multiprocessing name.

- ``kill_after=N``: the host worker SIGKILLs the main process once it has
  recorded N frames, then goes on as after any kill -9;
- ``scorer_stalls``: the scorer receives its frames and never answers (a
  scorer that gets no CPU).
"""
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAULT, ARGV = sys.argv[1], sys.argv[2:]


def _install(fault, process):
    kind, _, value = fault.partition('=')
    if kind == 'kill_after' and process == 'sbvsr-host' and sys.platform != 'win32':
        import signal
        from jittor_sbvsr.infer import resume
        record, count = resume.record_frame, [0]

        def record_then_kill(*args):
            record(*args)
            count[0] += 1
            if count[0] == int(value):
                os.kill(os.getppid(), signal.SIGKILL)
        resume.record_frame = record_then_kill  # outputs.py imports it in the worker, after this
    elif kind == 'scorer_stalls' and process == 'sbvsr-scorer':
        from jittor_sbvsr.infer import scorer

        def never(sr, gt):
            time.sleep(3600)
            return 0.0, 0.0
        scorer.psnr_ssim = never
    elif kind not in ('kill_after', 'scorer_stalls'):
        raise SystemExit(f'unknown fault {fault!r}')


_install(FAULT, multiprocessing.current_process().name)

if __name__ == '__main__':
    from jittor_sbvsr_launcher import infer
    sys.exit(infer(ARGV))

"""A rank that makes no progress under ``mpirun`` ends, and mpirun stops the job.

A rank whose peer died or hangs would wait forever in a collective
(jittor_sbvsr/dist.py); the :class:`Watchdog` prints one line naming the rank
and the phase and ends it. Without mpirun it does nothing.
"""
import os
import sys

__all__ = ['Watchdog']


# The watcher runs in its own process: a rank blocked in a collective is
# inside Jittor's C++ code holding the GIL, so no Python thread of it could
# run. It reads heartbeat lines (a non-empty line names the next phase) from
# stdin; EOF means the rank ended normally.
_WATCHER = r"""
import os, select, signal, sys
pid, timeout, tag = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
phase, buf = 'start-up', b''
while True:
    if not select.select([0], [], [], timeout)[0]:
        sys.stderr.write(f'error ({tag}): no progress for {timeout:.0f} s during {phase}; another '
                         f'rank has probably died or hangs. Stopping (raise --dist_timeout if a step '
                         f'can really take this long)\n')
        sys.stderr.flush()
        os.kill(pid, signal.SIGKILL)
        sys.exit(3)
    data = os.read(0, 65536)
    if not data:
        sys.exit(0)
    *lines, buf = (buf + data).split(b'\n')
    for line in lines:
        if line:
            phase = line.decode('utf-8', 'replace')
"""


class Watchdog:
    """Ends this rank when it makes no progress for ``timeout`` seconds.

    Call :meth:`beat` after every unit of work (a training batch, an
    evaluation window) and :meth:`phase` to name what comes next. A
    collective never returns if another rank died or hangs, so a long silence
    means the group is broken: a watcher process prints one line naming the
    rank and the phase and kills this rank; mpirun then stops the others.
    ``timeout <= 0`` or a single process: inactive.
    """

    def __init__(self, timeout, rank=0, world=1):
        self.proc = None
        if float(timeout) > 0 and int(world) > 1:
            import subprocess
            self.proc = subprocess.Popen(
                [sys.executable, '-c', _WATCHER, str(os.getpid()), str(float(timeout)),
                 f'rank {int(rank)}/{int(world)}'], stdin=subprocess.PIPE, close_fds=True)

    def _send(self, text):
        if self.proc is not None:
            try:
                os.write(self.proc.stdin.fileno(), text.encode('utf-8', 'replace') + b'\n')
            except (OSError, ValueError):
                pass

    def beat(self):
        self._send('')

    def phase(self, name):
        self._send(' '.join(str(name).split()) or 'work')

    def close(self):
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except Exception:
                proc.kill()

"""One run per output folder: a lock the running process holds on ``<folder>/.run.lock``.

The lock is the operating system's (``flock`` on Unix, ``msvcrt.locking`` on
Windows): it ends with the process however the process ends, so the lock
file a killed run leaves behind blocks nothing (a ``--resume`` takes it
over). The file names the process holding it (process id and command), for
the one line that refuses a second run.
"""
import json
import os
import sys

from ..errors import UserError

NAME = '.run.lock'
_WIN_OFFSET = 2 ** 30  # Windows locks bytes: one far past the text, which others must still read


def _try_lock(f):
    """Take the OS lock on the open file ``f`` without waiting; False when another process has it."""
    if sys.platform == 'win32':
        import msvcrt
        f.seek(_WIN_OFFSET)
        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    else:
        import fcntl
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


def _unlock(f):
    if sys.platform == 'win32':
        import msvcrt
        f.seek(_WIN_OFFSET)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _describe(path):
    """'process 123 (command)' of the lock file's holder, as it wrote it."""
    try:
        with open(path, encoding='utf-8') as f:
            info = json.loads(f.readline())
        return f"process {info['pid']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return 'another process'


def holder(folder):
    """Who holds ``folder``'s lock ('process N (command)'), or None: no lock, or one a process that
    ended left. Reads only (a lock file is not created here)."""
    path = os.path.join(os.fspath(folder), NAME)
    try:
        f = open(path, 'r+', encoding='utf-8')
    except OSError:
        return None
    with f:
        if _try_lock(f):
            _unlock(f)
            return None
    return _describe(path)


class FolderLock:
    """``folder`` held by this process until ``release`` (a context manager too); a folder another
    live process holds is a UserError naming that process."""

    def __init__(self, folder):
        self.path = os.path.join(os.fspath(folder), NAME)
        self._f = None
        while self._f is None:
            f = open(self.path, 'a+', encoding='utf-8')
            if not _try_lock(f):
                f.close()
                raise UserError(f'{os.fspath(folder)}: another run is writing there now, {_describe(self.path)}; '
                                'wait for it to end, or choose another --infer_flag')
            if sys.platform == 'win32' or _same_file(f, self.path):
                self._f = f
            else:  # a run ending just now removed the file we opened: lock the new one
                f.close()
        self._f.seek(0)
        self._f.truncate()
        self._f.write(json.dumps({'pid': os.getpid(), 'command': ' '.join(sys.argv)}) + '\n')
        self._f.flush()

    def release(self):
        """The folder is free again (its lock file removed)."""
        if self._f is None:
            return
        f, self._f = self._f, None
        if sys.platform != 'win32':
            _remove(self.path)  # while still held: no other run can lock the removed file meanwhile
        _unlock(f)
        f.close()
        if sys.platform == 'win32':
            _remove(self.path)  # a run that opened it since keeps its own handle; then this fails quietly

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _same_file(f, path):
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except OSError:
        return False


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass

"""The one place that configures Jittor.

Jittor 1.3.8.5 reads its settings from environment variables at import time,
so everything here must run before the first ``import jittor``;
``jittor_sbvsr/__init__.py`` calls :func:`prepare` for that reason. An
installation that cannot work makes that import raise
:class:`InstallationError` (an ImportError); the commands turn it into one
line (``jittor_sbvsr_launcher.py``).

What it fixes, on machines like ours:
- an ``nvcc`` without a CUDA driver makes Jittor try (and fail) to use CUDA:
  without a loadable ``libcuda`` we hide nvcc (``nvcc_path=''``);
- Jittor downloads oneDNN on import when it is missing: we never let it.
  ``env/setup.sh`` installs oneDNN 2.2 from PyPI wheels where Jittor looks
  for it; without it we turn Jittor's oneDNN path off (``use_mkl=0``) and
  warn once that CPU convolutions will be very slow;
- numpy 2 makes ``Var.numpy()`` return garbage: refuse to start;
- Jittor names its compile cache after the git branch of the folder it is
  installed in (our repo's branch, for a venv inside a checkout), so two
  checkouts share one cache and each import from the other one recompiles
  ``jit_utils`` and exits with "please rerun": we key the cache on the
  Jittor installation instead;
- under ``mpirun`` Jittor needs Open MPI's ``mpicc`` (it compiles its MPI
  ops with it) and crashes on import without it: we say so in one line; the
  ranks other than 0 keep Jittor's info lines to themselves. With CUDA it
  would download and build NCCL: we point it at a system NCCL
  (libnccl-dev) or, without one, turn NCCL off (gradients are then averaged
  through host memory).
"""
import ctypes
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

ONEDNN_NAME = 'dnnl_lnx_2.2.0_cpu_gomp'
PINNED_JITTOR = '1.3.8.5'

_state = {'prepared': False, 'onednn': False, 'cuda_visible': False, 'interrupted': False}


class RuntimeSetupError(RuntimeError):
    """A problem of the installation or the machine, reported as one line by the CLIs."""


class InstallationError(RuntimeSetupError, ImportError):
    """An installation Jittor cannot run in (numpy 2, mpirun without mpicc).

    Raised by :func:`prepare`, i.e. by ``import jittor_sbvsr``: an ImportError,
    so that a library user sees the import fail, with the reason as its message.
    """


def mpi_env():
    """(rank, size) from Open MPI's environment under mpirun (before Jittor is imported), else None."""
    size = os.environ.get('OMPI_COMM_WORLD_SIZE')
    if size is None:
        return None
    return os.environ.get('OMPI_COMM_WORLD_RANK', '?'), size


def error_line(err):
    """``error: <message>`` on one line; under mpirun ``error (rank r/N): ...``."""
    mpi = mpi_env()
    tag = f' (rank {mpi[0]}/{mpi[1]})' if mpi else ''
    return f'error{tag}: {" ".join(str(err).split())}'


def report(err):
    """Print ``err`` as :func:`error_line` on stderr; returns the commands' exit code for it, 2."""
    print(error_line(err), file=sys.stderr)
    return 2


def jittor_home():
    """Mirror of ``jittor_utils.home()`` without importing jittor."""
    if os.environ.get('JITTOR_HOME'):
        return os.path.abspath(os.environ['JITTOR_HOME'])
    cfg = Path.home() / '.cache' / 'jittor' / 'config.json'
    try:
        return json.loads(cfg.read_text()).get('JITTOR_HOME', str(Path.home()))
    except (OSError, ValueError):
        return str(Path.home())


def onednn_dir():
    return os.path.join(jittor_home(), '.cache', 'jittor', 'mkl', ONEDNN_NAME)


def onednn_installed():
    d = onednn_dir()
    return (os.path.isfile(os.path.join(d, 'lib', 'libmkldnn.so'))
            and os.path.isfile(os.path.join(d, 'include', 'dnnl.h')))


def cuda_driver_present():
    try:
        ctypes.CDLL('libcuda.so.1')
        return True
    except OSError:
        return False


def check_numpy():
    import numpy
    if int(numpy.__version__.split('.')[0]) >= 2:
        raise InstallationError(
            f'numpy {numpy.__version__} is installed, but Jittor {PINNED_JITTOR} needs numpy<2 '
            '(Var.numpy() returns garbage with numpy 2); run env/setup.sh or '
            f'pip install -r env/jittor-{PINNED_JITTOR}.txt')


def _cache_float_info():
    """Let numpy measure its float types now, while denormals still work.

    numpy computes ``np.finfo`` on first use and caches it; computed after
    denormal flushing is on (Jittor, :func:`flush_denormals`) it warns that
    "the smallest subnormal is zero" wherever a library asks for it.
    """
    import numpy
    for t in (numpy.float16, numpy.float32, numpy.float64, numpy.longdouble):
        numpy.finfo(t)


def prepare():
    """Set Jittor's environment before it is imported. Idempotent once it has succeeded:
    after an :class:`InstallationError` the next call checks again (a retried import fails too)."""
    if _state['prepared']:
        return
    _prepare()
    _state['prepared'] = True


def _prepare():
    check_numpy()
    _cache_float_info()
    if 'jittor' in sys.modules:
        # Too late to steer it; report what it chose.
        _state['onednn'] = sys.modules['jittor'].compile_extern.mkl_ops is not None
        return
    if 'cache_name' not in os.environ:
        spec = importlib.util.find_spec('jittor')
        where = os.path.dirname(os.path.abspath(spec.origin)) if spec and spec.origin else ''
        os.environ['cache_name'] = 'sbvsr_' + hashlib.sha1(where.encode('utf-8')).hexdigest()[:10]
    mpi = mpi_env()
    if mpi:
        mpicc = os.environ.get('mpicc_path') or shutil.which('mpicc')
        if not mpicc or not os.path.isfile(mpicc):
            raise InstallationError(
                'started by mpirun, but Open MPI\'s mpicc was not found (Jittor builds its MPI ops '
                'with it): install libopenmpi-dev (env/setup.sh does, as root) or set mpicc_path')
        if mpi[0] != '0':
            os.environ.setdefault('log_silent', '1')
    if os.environ.get('nvcc_path') is None and not cuda_driver_present():
        os.environ['nvcc_path'] = ''
    _state['cuda_visible'] = os.environ.get('nvcc_path', None) != ''
    if _state['cuda_visible']:
        # cuDNN's default math mode allows TF32 on Ampere and newer, which
        # alone breaks parity, and Jittor sets it only with use_tensorcore;
        # the variable must be set before the CUDA libraries load.
        os.environ.setdefault('NVIDIA_TF32_OVERRIDE', '0')
        # Jittor would download CUTT (transposes; it has its own kernel) and,
        # wherever mpicc exists, NCCL, mpirun or not.
        os.environ.setdefault('use_cutt', '0')
        _use_system_nccl()
    if os.environ.get('use_mkl') == '0':
        _state['onednn'] = False
    elif onednn_installed():
        _state['onednn'] = True
    else:
        os.environ['use_mkl'] = '0'
        _state['onednn'] = False
        print('jittor-sbvsr: warning: oneDNN is not installed, CPU convolutions will be ~80x slower '
              '(run env/setup.sh to install it)', file=sys.stderr)


def find_system_nccl():
    """(include dir, lib dir) of an installed NCCL (nccl.h and libnccl.so), or None."""
    incs = ['/usr/include', '/usr/local/include', '/usr/local/cuda/include']
    libs = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/local/lib',
            '/usr/local/cuda/lib64']
    inc = next((d for d in incs if os.path.isfile(os.path.join(d, 'nccl.h'))), None)
    lib = next((d for d in libs if os.path.isfile(os.path.join(d, 'libnccl.so'))), None)
    return (inc, lib) if inc and lib else None


def _use_system_nccl():
    """Never let Jittor download NCCL (it does with CUDA wherever mpicc exists)."""
    if os.environ.get('use_nccl') == '0' or (os.environ.get('nccl_include_path')
                                              and os.environ.get('nccl_lib_path')):
        return
    found = find_system_nccl()
    if found:
        os.environ['nccl_include_path'], os.environ['nccl_lib_path'] = found
    else:
        os.environ['use_nccl'] = '0'


def onednn_enabled():
    return _state['onednn']


def _on_sigint(signum, frame):
    _state['interrupted'] = True
    raise KeyboardInterrupt


def interrupted():
    """True once Ctrl-C (SIGINT) has reached this process through :func:`python_sigint`'s handler.

    A child killed by the same Ctrl-C (Jittor's compiler, say) can make the
    call that waited on it fail with some other exception first; the CLIs
    then still report the interruption, not that failure.
    """
    return _state.get('interrupted', False)


def abandon_compile_pool():
    """After Ctrl-C: let the process exit instead of hanging in Jittor's compiler pool.

    Importing Jittor starts a multiprocessing pool of compiler workers
    (jittor_utils.p) and registers its shutdown at exit. A terminal's Ctrl-C
    reaches those workers too; one that dies holding the pool's task-queue
    lock makes that shutdown wait on the lock for ever. The workers are
    idle between compilations: kill them and drop the pool's exit hooks.
    """
    ju = sys.modules.get('jittor_utils')
    pool = getattr(ju, 'p', None)
    if pool is None:
        return
    hook = getattr(pool, '_terminate', None)  # multiprocessing's own exit-time terminate
    if hook is not None:
        hook.cancel()
    for worker in list(getattr(pool, '_pool', [])):
        try:
            worker.kill()
        except (OSError, ValueError, AttributeError):
            pass

    class _Gone:  # what jittor_utils.pool_cleanup (at exit) finds instead of the pool
        def __exit__(self, *exc):
            return False
    ju.p = _Gone()


def python_sigint():
    """Let Ctrl-C raise KeyboardInterrupt again, and keep Jittor's SIGCHLD handler out.

    Jittor's import installs (src/utils/log.cc, register_sigaction) a SIGINT
    handler that ends the process on the spot, possibly between writing a
    temporary file and moving it into place; with Python's handler the
    current step finishes, temporary files are removed and what was
    completed stays intact. Its SIGCHLD handler ends the process with exit
    code 1 and "Caught SIGCHLD. Maybe out of memory" whenever any child
    process dies of a signal, e.g. its own compiler or a loader worker hit
    by the same Ctrl-C: the default disposition leaves that to whoever
    waits on the child (subprocess, the loader's process pool).
    """
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
        if hasattr(signal, 'SIGCHLD'):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)


_FTZ_SRC = """
#pragma omp parallel
{ _mm_setcsr(_mm_getcsr() | 0x8040); }
_mm_setcsr(_mm_getcsr() | 0x8040);
@out(0) = omp_get_max_threads();
"""


def flush_denormals():
    """Make every CPU thread of Jittor and oneDNN flush denormals (FTZ + DAZ).

    Jittor compiles its kernels with -Ofast, and loading such a kernel turns
    flushing on for the loading thread only: OpenMP threads started before
    compute with denormals, threads started after without. Results then
    depend on the order things happened in (a resumed training run differed
    from an uninterrupted one in the last bits of tiny Adam moments). One
    mode on every thread makes them depend on the inputs alone.
    """
    import platform
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return
    import jittor as jt
    with jt.flag_scope(use_cuda=0):
        jt.code([1], 'int32', [], cpu_header='#include <xmmintrin.h>\n#include <omp.h>',
                cpu_src=_FTZ_SRC).sync()


def quiet_jittor(verbose=False):
    """Before Jittor's import: hide its dozen ``[i ...]`` start-up lines unless ``verbose``,
    and say in one line when a first use will compile (minutes, once).

    ``log_silent`` also hides Jittor's warnings, so :func:`select_device`
    turns it off again right after the import: later warnings show.
    """
    if 'jittor' in sys.modules:
        return
    if not verbose and 'log_silent' not in os.environ:
        os.environ['log_silent'] = '1'
        _state['quiet_import'] = True
    if not _core_cached():
        print('jittor-sbvsr: first use: Jittor compiles its core, then the model\'s kernels '
              '(several minutes on a CPU, once; cached under '
              f'{os.path.join(jittor_home(), ".cache", "jittor")})', file=sys.stderr)


def _core_cached():
    """Whether Jittor's compiled core for our cache_name exists (a warm start)."""
    import glob
    name = os.environ.get('cache_name', '*')
    pattern = os.path.join(glob.escape(jittor_home()), '.cache', 'jittor', 'jt*', '*', '*', '*', '*',
                           name, 'jittor_core*.so')
    return bool(glob.glob(pattern))


def select_device(device='auto'):
    """Pick cpu or cuda for Jittor (and restore Python's Ctrl-C); returns the name used.

    TF32 stays off on GPUs: it alone moves outputs past the parity tolerances.
    """
    prepare()
    import jittor as jt
    if _state.pop('quiet_import', False):  # warnings show again after the quiet start-up
        import jittor_utils
        jt.flags.log_silent = 0
        jittor_utils.LOG.log_silent = 0
    python_sigint()
    if device not in ('auto', 'cpu', 'cuda'):
        raise RuntimeSetupError(f"unknown device '{device}' (use cpu, cuda or auto)")
    if device == 'cuda' and not jt.has_cuda:
        raise RuntimeSetupError('--device cuda was asked for, but Jittor found no usable CUDA '
                                '(no NVIDIA driver or nvcc on this machine)')
    flush_denormals()
    use = jt.has_cuda and device != 'cpu'
    jt.flags.use_cuda = 1 if use else 0
    if use and hasattr(jt.flags, 'use_tensorcore'):
        jt.flags.use_tensorcore = 0
    return 'cuda' if use else 'cpu'


def describe():
    import jittor as jt
    return (f"jittor {jt.__version__}, device {'cuda' if jt.flags.use_cuda else 'cpu'}, "
            f"oneDNN {'on' if onednn_enabled() else 'off'}")

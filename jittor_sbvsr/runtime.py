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
  The set-up installs oneDNN 2.2 inside the installation (:func:`onednn_dir`),
  so every user of it runs at full speed, and points Jittor's search there
  (tools/install_onednn.py). Without it we turn Jittor's oneDNN path off
  (``use_mkl=0``) and warn once that CPU convolutions will be very slow;
- the CUDA driver is ``libcuda.so.1`` on Linux (WSL2: in ``/usr/lib/wsl/lib``)
  and ``nvcuda.dll`` on Windows (:func:`cuda_driver`);
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

# oneDNN 2.2.0 as Jittor 1.3.8.5 names it: its Windows build uses MSVC's OpenMP (vcomp)
ONEDNN_NAMES = {'posix': 'dnnl_lnx_2.2.0_cpu_gomp', 'nt': 'dnnl_win_2.2.0_cpu_vcomp'}
ONEDNN_NAME = ONEDNN_NAMES['nt' if os.name == 'nt' else 'posix']
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
        return json.loads(cfg.read_text(encoding='utf-8')).get('JITTOR_HOME', str(Path.home()))
    except (OSError, ValueError):
        return str(Path.home())


def onednn_dir(prefix=None, name=ONEDNN_NAME):
    """oneDNN inside the install (``<sys.prefix>/onednn/<name>``, where env/setup.py puts it), so
    every user and HOME of the install finds it. Without ``prefix``, an older set-up's copy in
    the user's Jittor cache is used when the install has none."""
    own = os.path.join(prefix or sys.prefix, 'onednn', name)
    if prefix is None and not os.path.isdir(own):
        legacy = os.path.join(jittor_home(), '.cache', 'jittor', 'mkl', name)
        if os.path.isdir(legacy):
            return legacy
    return own


def onednn_files(windows=None):
    """The files (relative to oneDNN's folder) that Jittor 1.3.8.5 and the fused ops need."""
    if os.name == 'nt' if windows is None else windows:  # Jittor links dnnl.lib and loads bin/dnnl.dll
        return ['include/dnnl.h', 'lib/dnnl.lib', 'bin/dnnl.dll']
    return ['include/dnnl.h', 'lib/libmkldnn.so']


def onednn_installed(d=None):
    d = onednn_dir() if d is None else d
    return all(os.path.isfile(os.path.join(d, *f.split('/'))) for f in onednn_files())


ONEDNN_EDIT_MARK = 'jittor-sbvsr: oneDNN inside the install'  # tools/install_onednn.py's edit of Jittor


def jittor_finds_onednn(d=None):
    """Whether Jittor will look where ``d`` is: the user's cache it always searches, or the install's
    copy only while its ``compile_extern.py`` carries the set-up's edit (a reinstalled Jittor has lost
    it, and would then download oneDNN at import)."""
    d = onednn_dir() if d is None else d
    if os.path.commonpath([os.path.abspath(d), os.path.abspath(sys.prefix)]) != os.path.abspath(sys.prefix):
        return True
    spec = importlib.util.find_spec('jittor')
    if not spec or not spec.origin:
        return False
    try:
        with open(os.path.join(os.path.dirname(spec.origin), 'compile_extern.py'), encoding='utf-8') as f:
            return ONEDNN_EDIT_MARK in f.read()
    except OSError:
        return False


# Where the NVIDIA driver's library is, per platform: WSL2 keeps it (and the
# loader may not be told) in /usr/lib/wsl/lib; Windows' is nvcuda.dll in System32.
# Loaded once by its path, it stays loaded, and CUDA's own lookup by name finds it.
CUDA_DRIVERS = {'posix': ['libcuda.so.1', '/usr/lib/wsl/lib/libcuda.so.1'], 'nt': ['nvcuda.dll']}


def cuda_driver(load=None):
    """The CUDA driver library that loads here (its name or path), or None."""
    load = load or ctypes.CDLL
    for name in CUDA_DRIVERS.get(os.name, []):
        if os.path.isabs(name) and not os.path.isfile(name):
            continue
        try:
            load(name)
            return name
        except OSError:
            pass
    return None


def cuda_driver_present():
    return cuda_driver() is not None


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
    elif onednn_installed() and jittor_finds_onednn():
        _state['onednn'] = True
    else:
        os.environ['use_mkl'] = '0'
        _state['onednn'] = False
        what = 'Jittor was reinstalled since the set-up' if onednn_installed() else 'oneDNN is not installed'
        print(f'jittor-sbvsr: warning: {what}, CPU convolutions will be ~80x slower '
              '(run env/setup.sh, or on Windows py env\\setup.py, to install it)', file=sys.stderr)


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


# Without OpenMP (Jittor's MSVC build passes no flag for it) there is one thread.
_FTZ_HEAD = """
#include <xmmintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif
static int sbvsr_flush_denormals() {
    _mm_setcsr(_mm_getcsr() | 0x8040);
#ifdef _OPENMP
    #pragma omp parallel
    { _mm_setcsr(_mm_getcsr() | 0x8040); }
    return omp_get_max_threads();
#else
    return 1;
#endif
}
"""
_FTZ_SRC = '@out(0) = sbvsr_flush_denormals();'  # (a source starting with '_' would be taken for a CUDA kernel)


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
        jt.code([1], 'int32', [], cpu_header=_FTZ_HEAD, cpu_src=_FTZ_SRC).sync()


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
    """Whether Jittor's compiled core for our cache_name exists (a warm start): a ``.so``, on Windows a ``.pyd``."""
    import glob
    name = os.environ.get('cache_name', '*')
    pattern = os.path.join(glob.escape(jittor_home()), '.cache', 'jittor', 'jt*', '*', '*', '*', '*',
                           name, 'jittor_core*')
    return any(p.endswith(('.so', '.pyd')) for p in glob.glob(pattern))


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

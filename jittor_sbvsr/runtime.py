"""The one place that configures Jittor.

Jittor 1.3.8.5 reads its settings from environment variables at import time,
so everything here must run before the first ``import jittor``;
``jittor_sbvsr/__init__.py`` calls :func:`prepare` for that reason. An
installation that cannot work makes that import raise
:class:`InstallationError` (an ImportError); the commands turn it into one
line (``jittor_sbvsr_launcher.py``). Standard library only, importing
nothing of the package: the set-up (env/setup.py, tools/install_onednn.py)
reads this file by its path.

What it fixes, on machines like ours:
- an ``nvcc`` without a CUDA driver makes Jittor try (and fail) to use CUDA:
  without a loadable ``libcuda`` we hide nvcc (``nvcc_path=''``);
- Jittor downloads oneDNN on import when it is missing: we never let it.
  The set-up installs oneDNN 2.2 inside the installation (:func:`onednn_dir`),
  so every user of it runs at full speed, and points Jittor's search there
  (tools/install_onednn.py). Without it we turn Jittor's oneDNN path off
  (``use_mkl=0``) and warn once that CPU convolutions will be very slow;
  the same on Windows without the VC++ redistributable, which oneDNN's
  dnnl.dll needs (Jittor's import would fail instead);
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
- under ``mpirun`` every rank would use GPU 0 (Jittor 1.3.8.5 chooses a device
  per rank only in its NCCL wrapper, after its memory probe has opened a
  context on GPU 0): each rank is given its own GPU through
  ``CUDA_VISIBLE_DEVICES`` (:func:`gpu_for_rank`);
- an NVIDIA driver without a CUDA toolkit makes Jittor download CUDA 11.2:
  we hide nvcc and say in one line that the run uses the CPU;
- torch installed beside Jittor would be imported by Jittor first (its CUDA
  libraries then win): ``FIX_TORCH_ERROR=0``.

One file: every item above must run before Jittor's import, and the set-up
loads this file by its path before the package (or numpy < 2) is installed,
so it cannot lean on the rest of the package or be a package itself.
"""
import ctypes
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# oneDNN 2.2.0 as Jittor 1.3.8.5 names it: its Windows build uses MSVC's OpenMP (vcomp)
ONEDNN_NAMES = {'posix': 'dnnl_lnx_2.2.0_cpu_gomp', 'nt': 'dnnl_win_2.2.0_cpu_vcomp'}
ONEDNN_NAME = ONEDNN_NAMES['nt' if os.name == 'nt' else 'posix']
PINNED_JITTOR = '1.3.8.5'

_state = {'prepared': False, 'onednn': False, 'cuda_visible': False, 'interrupted': False, 'tf32': False,
          'no_nvcc': None, 'gpu': None}
# Where MPI launchers put a rank's index and count on its node: Open MPI, MPICH/Intel MPI, MVAPICH, Slurm
LOCAL_RANK_VARS = ('OMPI_COMM_WORLD_LOCAL_RANK', 'MPI_LOCALRANKID', 'MV2_COMM_WORLD_LOCAL_RANK', 'SLURM_LOCALID')
LOCAL_SIZE_VARS = ('OMPI_COMM_WORLD_LOCAL_SIZE', 'MPI_LOCALNRANKS', 'MV2_COMM_WORLD_LOCAL_SIZE',
                   'SLURM_NTASKS_PER_NODE')
# the nvcc Jittor 1.3.8.5 looks for when nvcc_path is not set (compiler.py), after PATH
NVCC_PLACES = ('/usr/local/cuda/bin/nvcc', '/usr/bin/nvcc', '/opt/cuda/bin/nvcc')


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


# The Visual C++ 2015-2022 redistributable (x64): what MSVC-built code loads. oneDNN's dnnl.dll
# needs msvcp140 and vcomp140 (MSVC's OpenMP); python.org's Python ships only vcruntime140(_1).
VC_RUNTIME = ('vcruntime140.dll', 'vcruntime140_1.dll', 'msvcp140.dll', 'vcomp140.dll')
VC_REDIST_FIX = 'winget install --id Microsoft.VCRedist.2015+.x64 -e'


def jittor_msvc_bin():
    """The folder of the compiler Jittor uses on Windows (``cc_path``, else the MSVC it downloads);
    Jittor adds it to the DLL search path."""
    if os.environ.get('cc_path'):
        return os.path.dirname(os.environ['cc_path'])
    return os.path.join(jittor_home(), '.cache', 'jittor', 'msvc', 'VC', '_', '_', '_', '_', 'bin')


def vc_runtime_missing(load=None, dirs=()):
    """The redistributable's DLLs (:data:`VC_RUNTIME`) that neither load here (Windows looks in
    System32 and Python's folder) nor sit in one of ``dirs``. ``load``: ctypes.CDLL, or a test's."""
    load = load or ctypes.CDLL
    missing = []
    for name in VC_RUNTIME:
        if any(os.path.isfile(os.path.join(d, name)) for d in dirs):
            continue
        try:
            load(name)
        except OSError:
            missing.append(name)
    return missing


def onednn_problem(d=None, load=None):
    """Why Jittor's oneDNN path must be off, as (what, fix), or None when it can be on.

    On Windows oneDNN's dnnl.dll does not load without the VC++ redistributable,
    and Jittor's import would then fail instead of running without oneDNN.
    """
    if not onednn_installed(d):
        return 'oneDNN is not installed', 'run env/setup.sh, or on Windows py env\\setup.py, to install it'
    if not jittor_finds_onednn(d):
        return 'Jittor was reinstalled since the set-up', 'run env/setup.sh, or on Windows py env\\setup.py, again'
    missing = vc_runtime_missing(load, [jittor_msvc_bin()]) if os.name == 'nt' else []
    if missing:
        return (f'oneDNN needs the Visual C++ redistributable ({", ".join(missing)} not found)',
                f'install it: {VC_REDIST_FIX}')
    return None


ONEDNN_EDIT_MARK = 'jittor-sbvsr: oneDNN inside the install'  # tools/install_onednn.py's edit of Jittor


def is_inside(path, folder, pathmod=os.path):
    """Whether ``path`` is ``folder`` or inside it. ``pathmod``: os.path, or ntpath/posixpath to read
    another platform's paths; on Windows two drives (C: and D:) have no common path, and the answer
    is False, not commonpath's ValueError."""
    path, folder = (pathmod.normcase(pathmod.abspath(p)) for p in (path, folder))
    try:
        return pathmod.commonpath([path, folder]) == folder
    except ValueError:
        return False


def jittor_finds_onednn(d=None, prefix=None, pathmod=os.path):
    """Whether Jittor will look where ``d`` is: the user's cache it always searches, or the install's
    (``prefix``, default sys.prefix) copy only while its ``compile_extern.py`` carries the set-up's
    edit (a reinstalled Jittor has lost it, and would then download oneDNN at import)."""
    d = onednn_dir() if d is None else d
    if not is_inside(d, sys.prefix if prefix is None else prefix, pathmod):
        return True
    spec = importlib.util.find_spec('jittor')
    if not spec or not spec.origin:
        return False
    try:
        with open(os.path.join(os.path.dirname(spec.origin), 'compile_extern.py'), encoding='utf-8') as f:
            return ONEDNN_EDIT_MARK in f.read()
    except OSError:
        return False


CUDNN_EDIT_MARK = 'jittor-sbvsr: cuDNN inside the install'  # tools/jittor_cuda_patch.py's edit


def jittor_finds_cudnn(nvcc, prefix=None, jittor_dir=None):
    """Whether Jittor 1.3.8.5 will find cuDNN (cudnn.h and libcudnn.so) for this nvcc: in the
    toolkit's folders, /usr, or the install's ``cudnn`` folder once Jittor was changed to look there."""
    import glob
    import platform
    arch = platform.machine()
    bin_dir = os.path.dirname(os.path.realpath(nvcc))
    home = os.path.dirname(bin_dir)
    lib = '/usr/lib/x86_64-linux-gnu' if nvcc == '/usr/bin/nvcc' else os.path.join(home, 'lib64')
    incs = [os.path.join(home, 'include'), os.path.join(home, 'targets', f'{arch}-linux', 'include'), '/usr/include']
    libs = [bin_dir, lib, os.path.join(home, 'targets', f'{arch}-linux', 'lib'), f'/usr/lib/{arch}-linux-gnu',
            '/usr/lib']
    if jittor_dir is None:
        spec = importlib.util.find_spec('jittor')
        jittor_dir = os.path.dirname(spec.origin) if spec and spec.origin else ''
    try:
        with open(os.path.join(jittor_dir, 'compile_extern.py'), encoding='utf-8') as f:
            edited = CUDNN_EDIT_MARK in f.read()
    except OSError:
        edited = False
    if edited:
        incs.append(os.path.join(prefix or sys.prefix, 'cudnn', 'include'))
        libs.append(os.path.join(prefix or sys.prefix, 'cudnn', 'lib'))
    return (any(os.path.isfile(os.path.join(d, 'cudnn.h')) for d in incs)
            and any(glob.glob(os.path.join(d, 'libcudnn.so*')) for d in libs))


# Where the NVIDIA driver's library is, per platform: WSL2 keeps it (and the
# loader may not be told) in /usr/lib/wsl/lib; Windows' is nvcuda.dll in System32.
# Loaded once by its path, it stays loaded, and CUDA's own lookup by name finds it.
CUDA_DRIVERS = {'posix': ['libcuda.so.1', '/usr/lib/wsl/lib/libcuda.so.1'], 'nt': ['nvcuda.dll']}


def cuda_driver(load=None, names=None):
    """The CUDA driver library that loads here (its name or path), or None. ``names``: where to
    look (default: this platform's :data:`CUDA_DRIVERS`)."""
    load = load or ctypes.CDLL
    for name in CUDA_DRIVERS.get(os.name, []) if names is None else names:
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


def _env_int(env, names):
    for name in names:
        try:
            return int(env[name])
        except (KeyError, ValueError):
            continue
    return None


def local_rank(env=None):
    """This process's index among the MPI ranks of its machine (None outside a launcher)."""
    return _env_int(os.environ if env is None else env, LOCAL_RANK_VARS)


def local_size(env=None):
    """The number of MPI ranks on this machine (1 outside a launcher)."""
    return _env_int(os.environ if env is None else env, LOCAL_SIZE_VARS) or 1


def gpu_for_rank(env, n_gpus):
    """The ``CUDA_VISIBLE_DEVICES`` a rank should get, or None to leave it as it is.

    Local rank k takes visible GPU k mod ``n_gpus``. A ``CUDA_VISIBLE_DEVICES``
    the user set is kept when it names one device (set per rank) or none, and
    when it lists several, rank k takes the k-th of them (mod their count).
    Outside an MPI launcher, or with no GPU, nothing changes.
    """
    k = local_rank(env)
    if k is None:
        return None
    given = env.get('CUDA_VISIBLE_DEVICES')
    if given is not None:
        ids = [d.strip() for d in given.split(',') if d.strip()]
        return ids[k % len(ids)] if len(ids) > 1 else None
    return str(k % n_gpus) if n_gpus > 0 else None


def ranks_per_gpu(env, n_gpus):
    """How many ranks of this machine share one GPU (1 when each has its own, or outside MPI)."""
    if local_rank(env) is None or n_gpus <= 0:
        return 1
    given = env.get('CUDA_VISIBLE_DEVICES')
    if given is not None and given.strip():
        n_gpus = min(n_gpus, len([d for d in given.split(',') if d.strip()]))
    return max(1, -(-local_size(env) // max(n_gpus, 1)))


def count_gpus(run=None):
    """NVIDIA GPUs on this machine, counted without initialising CUDA (``nvidia-smi -L``,
    else the driver's ``/proc/driver/nvidia/gpus``); 0 when neither says."""
    try:
        out = (run or subprocess.run)(['nvidia-smi', '-L'], capture_output=True, text=True, timeout=30).stdout
        n = sum(1 for line in out.splitlines() if line.startswith('GPU '))
        if n:
            return n
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return len(os.listdir('/proc/driver/nvidia/gpus'))
    except OSError:
        return 0


def place_rank(env=None, n_gpus=None):
    """Under an MPI launcher: give this rank its GPU (before CUDA starts); returns a description."""
    env = os.environ if env is None else env
    if local_rank(env) is None:
        return None
    n = count_gpus() if n_gpus is None else n_gpus
    given = env.get('CUDA_VISIBLE_DEVICES')
    chosen = gpu_for_rank(env, n)
    if chosen is not None:
        env['CUDA_VISIBLE_DEVICES'] = chosen
    before = {k: v for k, v in env.items() if k != 'CUDA_VISIBLE_DEVICES'}
    if given is not None:
        before['CUDA_VISIBLE_DEVICES'] = given
    share = _state['share'] = ranks_per_gpu(before, n)
    where = env.get('CUDA_VISIBLE_DEVICES')
    how = ' (set by jittor-sbvsr)' if chosen is not None else ' (CUDA_VISIBLE_DEVICES as given)' if where else ''
    return (f'local rank {local_rank(env)} of {local_size(env)}, GPU {where or "0"}{how}'
            + (f', shared by {share} ranks' if share > 1 else ''))


def ranks_sharing_device():
    """How many MPI ranks share this rank's GPU (1 outside mpirun): the per-rank division of a
    device budget happens only where this is more than 1."""
    return _state.get('share') or 1


def find_nvcc(env=None, which=None):
    """The nvcc Jittor would find (nvcc_path, PATH, the usual folders), or None."""
    env = os.environ if env is None else env
    if env.get('nvcc_path'):
        return env['nvcc_path']
    found = (which or shutil.which)('nvcc')
    return found or next((p for p in NVCC_PLACES if os.path.isfile(p) and os.access(p, os.X_OK)), None)


def jtcuda_installed():
    """Whether Jittor's own CUDA download (``jtcuda``) is in the user's cache already."""
    return os.path.isdir(os.path.join(jittor_home(), '.cache', 'jittor', 'jtcuda'))


# The newest host g++ each nvcc accepts (NVIDIA's installation guides), from that CUDA on;
# Jittor builds with nvcc -ccbin=<cc_path>
GCC_MAX = [((13, 0), 15), ((12, 8), 14), ((12, 4), 13), ((12, 0), 12), ((11, 4), 11), ((11, 1), 10), ((11, 0), 9)]


def gcc_major(cc=None):
    """The major version of the host compiler Jittor builds with (``cc_path``, else g++), or None."""
    cc = cc or os.environ.get('cc_path') or shutil.which('g++')
    if not cc:
        return None
    try:
        r = subprocess.run([cc, '-dumpversion'], capture_output=True, text=True, encoding='utf-8',
                           errors='replace', timeout=30)
        return int(r.stdout.strip().split('.')[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def gcc_problem(cuda_version, gcc):
    """(problem, fix) when nvcc of ``cuda_version`` refuses host g++ ``gcc`` (major), else None."""
    top = next((g for v, g in GCC_MAX if tuple(cuda_version) >= v), None)
    if gcc is None or top is None or gcc <= top:
        return None
    cuda = f'{cuda_version[0]}.{cuda_version[1]}'
    return (f'the host compiler is g++ {gcc}, nvcc of CUDA {cuda} accepts g++ up to {top} '
            '("unsupported GNU version")',
            f'install g++-{top} and set cc_path=g++-{top} (export it before env/setup.sh and every run)')


NO_CUDNN_FIX = ('pip install nvidia-cudnn-cu12 (CUDA 12; nvidia-cudnn-cu11 for CUDA 11) in this environment and '
                'rerun the set-up, which links it into the install for Jittor; or install cuDNN for the '
                'toolkit (e.g. libcudnn9-dev-cuda-12)')
NO_NVCC_FIX = ('install a CUDA toolkit 11.8 to 13 (its nvcc on PATH, or set nvcc_path), '
               'e.g. apt-get install nvidia-cuda-toolkit or NVIDIA\'s cuda-toolkit package')


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
    # torch beside Jittor: Jittor would import it first (RTLD_GLOBAL), its CUDA libraries winning
    os.environ.setdefault('FIX_TORCH_ERROR', '0')
    if os.environ.get('nvcc_path') is None:
        _hide_nvcc(mpi is None or mpi[0] == '0')
    _state['cuda_visible'] = os.environ.get('nvcc_path', None) != ''
    if _state['cuda_visible']:
        _state['gpu'] = place_rank()
        _without_cudnn()
        # cuDNN's default math mode allows TF32 on Ampere and newer, which
        # alone breaks parity, and Jittor sets it only with use_tensorcore;
        # the variable must be set before the CUDA libraries load (--tf32: allow_tf32).
        os.environ.setdefault('NVIDIA_TF32_OVERRIDE', '0')
        # Jittor would download CUTT (transposes; it has its own kernel) and,
        # wherever mpicc exists, NCCL, mpirun or not.
        os.environ.setdefault('use_cutt', '0')
        _use_system_nccl()
    problem = None if os.environ.get('use_mkl') == '0' else onednn_problem()
    _state['onednn'] = os.environ.get('use_mkl') != '0' and problem is None
    if problem:
        os.environ['use_mkl'] = '0'
        print(f'jittor-sbvsr: warning: {problem[0]}, CPU convolutions will be ~80x slower ({problem[1]})',
              file=sys.stderr)


def _hide_nvcc(say):
    """No driver: nvcc hidden (a CPU box with a toolkit). A driver but no toolkit (Linux, WSL2):
    nvcc hidden too, so that Jittor does not download its CUDA 11.2, with one line (``say``)."""
    if not cuda_driver_present():
        os.environ['nvcc_path'] = ''
        return
    if os.name == 'nt' or find_nvcc() or jtcuda_installed():
        return  # Windows: Jittor's own CUDA (README "Platforms"); else the toolkit Jittor will find
    os.environ['nvcc_path'] = ''
    _state['no_nvcc'] = True
    if say:
        print('jittor-sbvsr: an NVIDIA driver but no CUDA toolkit (nvcc): running on the CPU; to use the GPU, '
              + NO_NVCC_FIX, file=sys.stderr)


def _without_cudnn():
    """No cuDNN that Jittor finds: its import would stop on "cudnn is not loaded" (or, quietened,
    carry on without it): ``conv_opt=1`` makes every command run on Jittor's own convolutions
    alike, which the log header says (:func:`describe`)."""
    nvcc = find_nvcc()
    if os.name == 'nt' or not nvcc or jtcuda_installed() or 'conv_opt' in os.environ:
        return
    if not jittor_finds_cudnn(nvcc):
        os.environ['conv_opt'] = '1'


def allow_tf32(on=True):
    """--tf32: let cuDNN and cuBLAS use TF32 (faster on Ampere and newer; results move in the last
    bits, past the parity tolerances). Must come before Jittor is imported."""
    if not on:
        return
    if 'jittor' in sys.modules and os.environ.get('NVIDIA_TF32_OVERRIDE') == '0':
        raise RuntimeSetupError('--tf32 must be chosen before Jittor is imported (NVIDIA_TF32_OVERRIDE=0 '
                                'is in force)')
    if os.environ.get('NVIDIA_TF32_OVERRIDE') == '0':
        del os.environ['NVIDIA_TF32_OVERRIDE']
    _state['tf32'] = True


def find_system_nccl():
    """(include dir, lib dir) of an installed NCCL (nccl.h and libnccl.so), or None."""
    incs = ['/usr/include', '/usr/local/include', '/usr/local/cuda/include']
    libs = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/local/lib',
            '/usr/local/cuda/lib64']
    inc = next((d for d in incs if os.path.isfile(os.path.join(d, 'nccl.h'))), None)
    lib = next((d for d in libs if os.path.isfile(os.path.join(d, 'libnccl.so'))), None)
    return (inc, lib) if inc and lib else None


def _use_system_nccl():
    """Never let Jittor download NCCL (it does with CUDA wherever mpicc exists). A rank that sees
    one GPU of several ranks (:func:`place_rank`) makes Jittor's NCCL wrapper fall back to MPI
    anyway (it counts visible devices against local ranks): NCCL is then not built."""
    if local_rank() is not None and local_size() > 1 and ',' not in os.environ.get('CUDA_VISIBLE_DEVICES', ','):
        os.environ.setdefault('use_nccl', '0')
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
        if _state['no_nvcc']:
            raise RuntimeSetupError('--device cuda was asked for: this machine has an NVIDIA driver but no CUDA '
                                    f'toolkit (nvcc), which Jittor compiles its GPU kernels with; fix: {NO_NVCC_FIX}')
        raise RuntimeSetupError('--device cuda was asked for, but Jittor found no usable CUDA '
                                '(no NVIDIA driver or nvcc on this machine)')
    flush_denormals()
    use = jt.has_cuda and device != 'cpu'
    jt.flags.use_cuda = 1 if use else 0
    if use and hasattr(jt.flags, 'use_tensorcore'):
        jt.flags.use_tensorcore = 1 if _state['tf32'] else 0
    if use:
        _cap_cudnn_workspace(jt)
    return 'cuda' if use else 'cpu'


def _cap_cudnn_workspace(jt):
    """cuDNN's algorithm search may take up to a quarter of the card (Jittor's
    ``max_workspace_ratio``): cap it at what the memory plan sets aside
    (``utils/memory.py:cudnn_workspace``), so that a small card's tiles fit."""
    from .utils.memory import cuda_memory, cudnn_workspace
    setter = getattr(getattr(jt, 'cudnn', None), 'set_max_workspace_ratio', None)
    mem = cuda_memory() if setter else None
    if mem:
        setter(cudnn_workspace(mem[1]) / mem[1])


def cuda_possible():
    """Whether Jittor will be given CUDA (a driver, nvcc not hidden), known before it starts."""
    prepare()
    return _state['cuda_visible']


def cudnn_loaded():
    """Whether Jittor's GPU convolutions are cuDNN's (else its own, much slower ones)."""
    ce = getattr(sys.modules.get('jittor'), 'compile_extern', None)
    return getattr(ce, 'cudnn', None) is not None


def gpu_placement():
    """This rank's GPU as :func:`place_rank` chose it (None outside mpirun, or without CUDA)."""
    return _state['gpu']


def describe():
    """The log header's runtime line: Jittor, the device, and on CUDA the GPU, whose convolutions, TF32."""
    import jittor as jt
    text = (f"jittor {jt.__version__}, device {'cuda' if jt.flags.use_cuda else 'cpu'}, "
            f"oneDNN {'on' if onednn_enabled() else 'off'}")
    if jt.flags.use_cuda:
        visible = os.environ.get('CUDA_VISIBLE_DEVICES')
        text += f", GPU {_state['gpu'] or (visible if visible is not None else '0')}"
        text += (', convolutions: cuDNN' if cudnn_loaded() else
                 ", convolutions: Jittor's own (no cuDNN: much slower; see sbvsr-doctor)")
        text += f", TF32 {'on (--tf32)' if _state['tf32'] else 'off'}"
    return text

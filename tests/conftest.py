import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# Under -X warn_default_encoding (.ci/run), an encoding left to the locale is an error: the
# locale's is GBK on a Chinese Windows. Installed packages (jittor, skimage's lazy_loader...)
# are not ours to change; the source check in tests/test_encoding.py covers the code no test runs.
OURS = {'jittor_sbvsr', 'jittor_sbvsr_launcher'}


def pytest_configure(config):
    from importlib.metadata import packages_distributions
    config.addinivalue_line('filterwarnings', 'error::EncodingWarning')
    for name in sorted(set(packages_distributions()) - OURS):  # later lines take precedence
        config.addinivalue_line('filterwarnings', rf'ignore::EncodingWarning:{re.escape(name)}(\.|$)')


def child_env(env=None):
    """The environment of a test's child process: ``env`` (default: this process's) with Python's
    standard streams in UTF-8 (PYTHONIOENCODING). Without it a Python child writes to a pipe in the
    locale's encoding (cp936 on a Chinese Windows), which the parent reads as UTF-8."""
    return dict(os.environ if env is None else env, PYTHONIOENCODING='utf-8')


def run_child(cmd, env=None, **kw):
    """subprocess.run for a test's child: :func:`child_env`, output captured (unless stdout or
    stderr are given) and decoded as UTF-8."""
    kw.pop('text', None)
    kw.pop('encoding', None)
    if 'stdout' not in kw and 'stderr' not in kw:
        kw.setdefault('capture_output', True)
    return subprocess.run([str(c) for c in cmd], env=child_env(env), encoding='utf-8', **kw)


def assert_ok(r):
    """Fail with the child's output tails as plain text: a tuple message would be cut to ~240
    characters by pytest, hiding the error line of a failed child."""
    assert r.returncode == 0, (f'exit {r.returncode}\n--- stdout (tail) ---\n{r.stdout[-2000:]}'
                               f'\n--- stderr (tail) ---\n{r.stderr[-6000:]}')


def posix_only(reason):
    """Skip a test on Windows, saying why. Its body starts with ``if sys.platform == 'win32': return``
    too: mypy reading the code as Windows (tests/test_windows_types.py) then reads no further (an
    ``assert sys.platform != 'win32'`` in a function body does not stop it)."""
    return pytest.mark.skipif(sys.platform == 'win32', reason=f'POSIX only: {reason}')


@contextlib.contextmanager
def symlinks_allowed():
    """Runs its block; the test is skipped where this user may not make symbolic links (Windows
    without Developer Mode or admin rights: WinError 1314)."""
    try:
        yield
    except OSError as e:
        if getattr(e, 'winerror', None) == 1314:
            pytest.skip('symbolic links need Developer Mode or admin rights on Windows (WinError 1314)')
        raise


def symlink_or_skip(link, target, target_is_directory=False):
    """``link`` -> ``target``, or the test skipped (:func:`symlinks_allowed`)."""
    with symlinks_allowed():
        os.symlink(target, link, target_is_directory=target_is_directory)


def _reference_dir():
    """tests/reference (in the repository; tests/reference/README.md), or SBVSR_REFERENCE."""
    env = os.environ.get('SBVSR_REFERENCE')
    return Path(env) if env else ROOT / 'tests' / 'reference'


REFERENCE = _reference_dir()
PUBLIC_CASE = REFERENCE / 'public_case'


@pytest.fixture(scope='session')
def reference_dir():
    assert REFERENCE.is_dir(), f'reference data missing: {REFERENCE} (set SBVSR_REFERENCE)'
    return REFERENCE


@pytest.fixture(scope='session')
def public_case(reference_dir):
    return PUBLIC_CASE


@pytest.fixture(scope='session')
def recipe_pkl(tmp_path_factory):
    """The parity tests' recipe weights for the published configuration, as a .pkl (a path with a space)."""
    import jittor_sbvsr  # noqa: F401
    from jittor_sbvsr.weights.checkpoint import save_state_atomic
    from jittor_sbvsr.weights.recipe import recipe_state
    from jittor_sbvsr.models import PWC_Recons
    path = tmp_path_factory.mktemp('weights') / 'recipe 1234.pkl'
    save_state_atomic(recipe_state({k: v.shape for k, v in PWC_Recons().state_dict().items()}), path)
    return path


TINY = dict(n_feat=16, extra_RBS=1, recons_RBS=2)


def _save_like_trainer(net, path):
    """What Trainer.save writes: {key: numpy array} through save_state_atomic."""
    from jittor_sbvsr.weights.checkpoint import save_state_atomic
    save_state_atomic({k: v.numpy() for k, v in net.state_dict().items()}, path)
    return path


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    """{'x4': path, 'x2': path} of tiny checkpoints (in a folder with a space and an accent)."""
    import jittor as jt
    from jittor_sbvsr import runtime
    from jittor_sbvsr.models import PWC_Recons
    # Jittor's SIGCHLD handler would end pytest itself when a test kills a child it started
    runtime.python_sigint()
    d = tmp_path_factory.mktemp('tiny') / 'wéights dir'
    d.mkdir()
    jt.set_global_seed(3)
    return {f'x{s}': _save_like_trainer(PWC_Recons(scale=s, **TINY), d / f'tiny x{s}.pkl') for s in (4, 2)}


def load_tool(name):
    """tools/<name>.py imported as a module (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', ROOT / 'tools' / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BROKEN_INSTALLS = {
    # cause -> what importing jittor_sbvsr must say
    'numpy 2': 'numpy 2.0.0 is installed, but Jittor 1.3.8.5 needs numpy<2',
    'mpirun without mpicc': "started by mpirun, but Open MPI's mpicc was not found",
}


@pytest.fixture(scope='session')
def broken_install(tmp_path_factory):
    """``broken_install(cause)``: environment variables that make this machine an installation
    Jittor cannot run in (runtime.InstallationError), for a child process."""
    fake = tmp_path_factory.mktemp('numpy 2 ü')
    (fake / 'numpy').mkdir()
    (fake / 'numpy' / '__init__.py').write_text("__version__ = '2.0.0'\n", encoding='utf-8')

    def env(cause):
        if cause == 'numpy 2':
            return {'PYTHONPATH': str(fake)}
        assert cause == 'mpirun without mpicc', cause
        return {'OMPI_COMM_WORLD_SIZE': '2', 'OMPI_COMM_WORLD_RANK': '0',
                'mpicc_path': str(fake / 'no-mpicc')}
    return env


@pytest.fixture(scope='session')
def demo_clips(tmp_path_factory):
    """Two synthetic 7-frame clips (64x96 HR, HR/ LR_blurdown_x4/ kernels/), for the data tests."""
    from jittor_sbvsr.data.synthetic import make_demo_videos
    root = tmp_path_factory.mktemp('demo')
    make_demo_videos(root, n_videos=2, n_frames=7, hr_size=(64, 96), seed=0)
    return str(root)


def psnr01(a, b):
    """PSNR of two float images in [0, 1] (the tiling tests' measure of "close")."""
    import numpy as np
    return 10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))


@pytest.fixture(scope='session')
def recipe_net():
    """The published configuration with the recipe weights, in eval mode (Jittor)."""
    from jittor_sbvsr.models import PWC_Recons
    from jittor_sbvsr.weights.recipe import recipe_state
    net = PWC_Recons()
    net.eval()
    net.load_parameters(recipe_state({k: v.shape for k, v in net.state_dict().items()}, seed=1234))
    return net


@pytest.fixture(scope='session')
def clip(public_case):
    """The public case's first video (32x48) and two of its windows: a border window and the next."""
    from jittor_sbvsr.data.folders import list_videos
    from jittor_sbvsr.data.images import read_frame
    from jittor_sbvsr.data.windows import window_indices
    _, paths = list_videos(public_case / 'LR')[0]
    frames = [read_frame(p) for p in paths]
    assert frames[0].shape[:2] == (32, 48)
    return frames, window_indices(len(frames), 5, border=True)[1:3]


@pytest.fixture(scope='session')
def demo(tmp_path_factory):
    """Two 5-frame synthetic clips (128x192 HR, 32x48 LR) under ``clips``: a train, test and LR-only folder."""
    from jittor_sbvsr.data.synthetic import make_demo_videos
    root = tmp_path_factory.mktemp('demo')
    make_demo_videos(root / 'clips', n_videos=2, n_frames=5)
    return root


def tiny_train_args(demo, **over):
    """The demo template's flags on ``demo``'s clips, a tiny model (n_feat 8, one ResBlock), ``over`` set."""
    from jittor_sbvsr.cli.train_options import parse_args
    a = parse_args(['--template', 'Self_Blind_VSR_Demo', '--cpu', '--dir_data', str(demo / 'clips'),
                    '--dir_data_test', '', '--n_threads', '0', '--test_every', '2'])
    a.n_feat, a.recons_RBS = 8, 1
    for k, v in over.items():
        setattr(a, k, v)
    return a


# what MPI launchers set (runtime.LOCAL_RANK_VARS, LOCAL_SIZE_VARS): none of them in these tests
RANK_VARS = ('OMPI_COMM_WORLD_LOCAL_RANK', 'MPI_LOCALRANKID', 'MV2_COMM_WORLD_LOCAL_RANK', 'SLURM_LOCALID',
             'OMPI_COMM_WORLD_LOCAL_SIZE', 'MPI_LOCALNRANKS', 'MV2_COMM_WORLD_LOCAL_SIZE', 'SLURM_NTASKS_PER_NODE')


@pytest.fixture
def clean_env(monkeypatch):
    """(test_runtime.py, test_gpu_machines.py) None of the variables runtime.prepare() sets in the environment; all restored afterwards.

    (Set, then deleted: monkeypatch restores only what it has recorded, and
    a leaked use_mkl=0 would turn oneDNN off for the rest of the session.)
    """
    for k in ('use_mkl', 'nvcc_path', 'NVIDIA_TF32_OVERRIDE', 'use_cutt', 'use_nccl',
              'nccl_include_path', 'nccl_lib_path', 'FIX_TORCH_ERROR', 'conv_opt', 'CUDA_VISIBLE_DEVICES',
              *RANK_VARS):
        monkeypatch.setenv(k, 'placeholder')
        monkeypatch.delenv(k)
    monkeypatch.delitem(sys.modules, 'jittor', raising=False)  # as before the first import
    return monkeypatch


def infer_here(*argv, root=ROOT):
    """The inference command run in this process, as cli/infer.py runs it (flags -> plan -> run),
    with ``root`` as the project's root: its Result (infer/run.py)."""
    from jittor_sbvsr.cli.infer import build_parser
    from jittor_sbvsr.infer.plan import make_plan
    from jittor_sbvsr.infer.run import run
    return run(make_plan(vars(build_parser().parse_args([str(a) for a in argv])), str(root)))


def copy_video(src, dst, n=None, size=None):
    """Copy the first ``n`` frames of the folder ``src`` to ``dst``, cropped to ``size`` (h, w) if given."""
    from PIL import Image
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src))[:n]:
        img = Image.open(os.path.join(src, name))
        if size is not None:
            img = img.crop((0, 0, size[1], size[0]))
        img.save(os.path.join(dst, name))


# Open MPI for the mpirun tests (test_mpi.py, test_inference_mpi.py): two ranks on
# two cores, one OpenMP thread each. Open MPI's shared-memory single-copy
# mechanism needs ptrace rights that containers often lack.
MPIRUN = shutil.which('mpirun')
HAVE_MPI = bool(MPIRUN and shutil.which('mpicc'))
MPI_ENV = dict(os.environ, OMP_NUM_THREADS='1', OMPI_MCA_btl_vader_single_copy_mechanism='none')


def require_mpi():
    """Skip without Open MPI, except under SBVSR_REQUIRE_MPI=1 (.ci/run), where that fails."""
    if not HAVE_MPI:
        if os.environ.get('SBVSR_REQUIRE_MPI') == '1':
            pytest.fail('Open MPI (mpirun, mpicc) is not installed, and SBVSR_REQUIRE_MPI=1')
        pytest.skip('Open MPI is not installed (env/setup.sh --test installs it as root)')


def mpirun(n, *args):
    """The command line that runs ``python *args`` on ``n`` ranks."""
    return [MPIRUN, '--allow-run-as-root', '-np', str(n), sys.executable, *map(str, args)]

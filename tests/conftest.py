import importlib.util
import os
import re
import shutil
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


def _reference_dir():
    env = os.environ.get('SBVSR_REFERENCE')
    return Path(env) if env else ROOT.parent / 'shared' / 'reference'


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

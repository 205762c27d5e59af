import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
    from jittor_sbvsr.io.checkpoint import save_state_atomic
    from jittor_sbvsr.io.recipe import recipe_state
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

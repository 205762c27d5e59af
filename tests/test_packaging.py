"""pyproject.toml: ``pip install -e .`` gives sbvsr-infer, sbvsr-train and sbvsr-convert with the
flags of inference.py, main.py and tools/convert_torch_weights.py; ``pip install .`` a copy in
site-packages that keeps its data (paths.ROOT) in the current folder, not in site-packages.

The installs are real: ``pip install --no-deps --no-build-isolation [-e] <checkout>`` into a
throwaway venv that sees this environment's packages through a .pth file (measured: 3.6 s
for the venv and the editable install on 2 cores). An editable install writes nothing into
the checkout; the non-editable one builds from a copy of it (setuptools builds in the tree).
"""
import importlib
import importlib.util
import os
import re
import shutil
import sys
import sysconfig
import tomllib

import pytest

from conftest import BROKEN_INSTALLS, ROOT, run_child

COMMANDS = {'sbvsr-infer': 'inference.py', 'sbvsr-train': 'main.py',
            'sbvsr-convert': 'tools/convert_torch_weights.py'}
MODULES = {'sbvsr-doctor': 'jittor_sbvsr.cli.doctor'}  # commands whose script form is python -m <module>
ENV = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'SBVSR_ROOT')} | {'COLUMNS': '100'}


def scripts():
    return tomllib.loads((ROOT / 'pyproject.toml').read_text(encoding='utf-8'))['project']['scripts']


def test_entry_points_are_the_scripts_code():
    """Each [project.scripts] entry resolves, and the top-level script is a shim over it."""
    assert set(scripts()) == set(COMMANDS) | set(MODULES)
    for name, target in scripts().items():
        module, func = target.split(':')
        main = getattr(importlib.import_module(module), func)
        assert callable(main)
        if name in MODULES:
            assert main.__name__ == func and callable(importlib.import_module(MODULES[name]).main)
            continue
        spec = importlib.util.spec_from_file_location(f'shim_{name}', ROOT / COMMANDS[name])
        shim = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(shim)  # the scripts run nothing unless __main__
        assert shim.main is main, f'{COMMANDS[name]} should only import {target}'
        assert main.__name__ == func and callable(importlib.import_module(f'jittor_sbvsr.cli.{func}').main)


def _make_venv(tmp_path_factory, name, *install):
    """A venv seeing this environment's packages, with ``pip install <install>`` done in it."""
    try:
        import setuptools
    except ImportError:
        pytest.fail('setuptools is not installed here (env/test-requirements.txt; needed for --no-build-isolation)')
    version = tuple(int(v) for v in setuptools.__version__.split('.')[:2])
    assert version >= (70, 1), (f'setuptools {setuptools.__version__} < 70.1 cannot build wheels on its own '
                                '(env/test-requirements.txt)')
    if sys.platform == 'win32':
        pytest.skip('POSIX only: the test environments are used through bin/ (Windows: Scripts\\)')
    d = tmp_path_factory.mktemp(name)
    run_child([sys.executable, '-m', 'venv', '--without-pip', d], check=True, timeout=120)
    py = d / 'bin' / 'python'
    site = run_child([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                     capture_output=True, text=True, check=True, encoding='utf-8').stdout.strip()
    with open(os.path.join(site, 'sbvsr_test_base.pth'), 'w', encoding='utf-8') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    r = run_child([py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-deps',
                   '--no-build-isolation', *map(str, install)], capture_output=True, text=True,
                  env=ENV, cwd=d, timeout=300, encoding='utf-8')
    assert r.returncode == 0, r.stdout + r.stderr
    return d


@pytest.fixture(scope='module')
def venv(tmp_path_factory):
    """``pip install -e <checkout>``."""
    def artefacts():  # what a non-editable build would leave (other files may come and go)
        return sorted(n for n in os.listdir(ROOT) if n.endswith('.egg-info') or n in ('build', 'dist'))

    before = artefacts()
    d = _make_venv(tmp_path_factory, 'venv é', '-e', ROOT)
    assert artefacts() == before  # no egg-info or build/ left in the checkout
    return d


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """``pip install <copy of the checkout>``: the package copied into the venv's site-packages."""
    src = tmp_path_factory.mktemp('source ü')
    for name in ('pyproject.toml', 'README.md', 'jittor_sbvsr_launcher.py', 'env', 'jittor_sbvsr'):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy(ROOT / name, src / name)
    return _make_venv(tmp_path_factory, 'installed é', src)


def run(cmd, cwd):
    return run_child([str(c) for c in cmd], capture_output=True, text=True, env=ENV, cwd=cwd,
                     timeout=120, encoding='utf-8')


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_command_help_is_the_scripts_help(name, venv):
    cmd = run([venv / 'bin' / name, '--help'], cwd=venv)
    script = run([sys.executable, ROOT / COMMANDS[name], '--help'], cwd=ROOT)
    assert cmd.returncode == 0 and script.returncode == 0, cmd.stderr + script.stderr
    assert cmd.stdout.startswith(f'usage: {name} ')
    flags = set(re.findall(r'--\w+', cmd.stdout))
    assert flags == set(re.findall(r'--\w+', script.stdout)) and '--help' in flags
    # the usage block wraps by the program's name; description and options are the same text
    assert cmd.stdout.split('\n\n', 1)[1] == script.stdout.split('\n\n', 1)[1]


def test_installed_commands_run_the_checkout(venv, tmp_path):
    r = run([venv / 'bin' / 'python', '-c', 'import jittor_sbvsr; print(jittor_sbvsr.__file__)'],
            cwd=tmp_path)
    assert r.stdout.strip() == str(ROOT / 'jittor_sbvsr' / '__init__.py'), r.stderr
    # errors stay one line through the console-script wrapper
    r = run([venv / 'bin' / 'sbvsr-convert', tmp_path / 'missing ü.pt', tmp_path / 'out.pkl'],
            cwd=tmp_path)
    errors = [line for line in r.stderr.splitlines() if line.startswith('error')]
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert len(errors) == 1 and 'missing ü.pt' in errors[0], r.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('cause', sorted(BROKEN_INSTALLS))
@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_commands_on_an_unusable_installation(name, cause, venv, broken_install, tmp_path):
    """The script and the installed command: one error line naming the problem, exit 2, no traceback
    (the package's import raises; jittor_sbvsr_launcher turns that into the line)."""
    env = ENV | broken_install(cause)
    args = [tmp_path / 'in ü.pt', tmp_path / 'out.pkl'] if name == 'sbvsr-convert' else ['--cpu']
    for cmd in ([sys.executable, ROOT / COMMANDS[name]], [venv / 'bin' / name]):
        r = run_child([str(c) for c in cmd + args], capture_output=True, text=True, env=env, cwd=tmp_path,
                      timeout=120, encoding='utf-8')
        assert r.returncode == 2 and 'Traceback' not in r.stderr, (cmd, r.stderr)
        assert r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
        assert r.stderr.startswith('error') and BROKEN_INSTALLS[cause] in r.stderr, r.stderr
        assert os.listdir(tmp_path) == []


_WHERE = 'import jittor_sbvsr, jittor_sbvsr.paths as o; print(jittor_sbvsr.__file__); print(o.ROOT)'


def test_an_editable_install_keeps_its_data_in_the_checkout(venv, tmp_path):
    r = run([venv / 'bin' / 'python', '-c', _WHERE], cwd=tmp_path)
    assert r.stdout.splitlines() == [str(ROOT / 'jittor_sbvsr' / '__init__.py'), str(ROOT)], r.stderr


def test_an_installed_package_keeps_its_data_in_the_current_folder(installed, tmp_path):
    """Not in site-packages: ROOT is the current folder there, or $SBVSR_ROOT."""
    work = tmp_path / 'work ü'
    work.mkdir()
    r = run([installed / 'bin' / 'python', '-c', _WHERE], cwd=work)
    package, root = r.stdout.splitlines()
    assert package.startswith(str(installed)) and package.endswith('__init__.py'), r.stderr
    assert root == str(work)
    env = ENV | {'SBVSR_ROOT': str(tmp_path / 'data é')}
    r = run_child([str(installed / 'bin' / 'python'), '-c', _WHERE], capture_output=True, text=True,
                  env=env, cwd=work, timeout=120, encoding='utf-8')
    assert r.stdout.splitlines()[1] == str(tmp_path / 'data é'), r.stderr
    r = run([installed / 'bin' / 'sbvsr-train', '--help'], cwd=work)
    assert r.returncode == 0 and r.stdout.startswith('usage: sbvsr-train '), r.stderr
    assert os.listdir(work) == []

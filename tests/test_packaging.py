"""pyproject.toml: ``pip install -e .`` gives sbvsr-infer, sbvsr-train and sbvsr-convert with the
flags of inference.py, main.py and tools/convert_torch_weights.py.

The install is real: ``pip install --no-deps --no-build-isolation -e <checkout>`` into a
throwaway venv that sees this environment's packages through a .pth file (measured: 3.6 s
for the venv and the install on 2 cores). An editable install writes nothing into the
checkout.
"""
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import tomllib

import pytest

from conftest import ROOT

COMMANDS = {'sbvsr-infer': 'inference.py', 'sbvsr-train': 'main.py',
            'sbvsr-convert': 'tools/convert_torch_weights.py'}
ENV = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'} | {'COLUMNS': '100'}


def scripts():
    return tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']


def test_entry_points_are_the_scripts_code():
    """Each [project.scripts] entry resolves, and the top-level script is a shim over it."""
    assert set(scripts()) == set(COMMANDS)
    for name, target in scripts().items():
        module, func = target.split(':')
        main = getattr(importlib.import_module(module), func)
        assert callable(main)
        spec = importlib.util.spec_from_file_location(f'shim_{name}', ROOT / COMMANDS[name])
        shim = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(shim)  # the scripts run nothing unless __main__
        assert shim.main is main, f'{COMMANDS[name]} should only import {target}'


@pytest.fixture(scope='module')
def venv(tmp_path_factory):
    try:
        import setuptools
    except ImportError:
        pytest.skip('setuptools is not installed here (needed for --no-build-isolation)')
    if int(setuptools.__version__.split('.')[0]) < 64:
        pytest.skip(f'setuptools {setuptools.__version__} < 64 cannot make editable installs')
    d = tmp_path_factory.mktemp('venv é')
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', d], check=True, timeout=120)
    py = d / 'bin' / 'python'
    site = subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, 'sbvsr_test_base.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    def artefacts():  # what a non-editable build would leave (other files may come and go)
        return sorted(n for n in os.listdir(ROOT) if n.endswith('.egg-info') or n in ('build', 'dist'))

    before = artefacts()
    r = subprocess.run([py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-deps',
                        '--no-build-isolation', '-e', ROOT], capture_output=True, text=True,
                       env=ENV, cwd=d, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert artefacts() == before  # no egg-info or build/ left in the checkout
    return d


def run(cmd, cwd):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=120)


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

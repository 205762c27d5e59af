#!/usr/bin/env python3
"""Set up jittor-sbvsr on Linux, WSL2 or Windows: one installer, standard library only.

It makes a virtual environment (``.venv``; ``bin/`` on Linux, ``Scripts\\``
on Windows) with the pinned runtime, installs oneDNN inside it (so every
user and every HOME of this install has fast CPU convolutions; Jittor's
compile cache stays per user), makes the changes Jittor 1.3.8.5 needs for
the CUDA toolkit found, installs Open MPI as root on Debian/Ubuntu, and
compiles Jittor once, so that the first real run does not look like a hang.

What it will do is decided by :func:`plan` from a :class:`Platform` (the
operating system, root or not, the commands on PATH, the environment) and
carried out by :func:`run`, so each platform's branch is checked on any
machine by faking the platform (tests/test_setup.py).

Usage: python env/setup.py [--test] [--venv DIR]
    (Windows: py -3.11 env\\setup.py; env/setup.sh is the same on Linux)
Environment: SBVSR_SKIP_MPI=1 skips Open MPI.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PINS = os.path.join('env', 'jittor-1.3.8.5.txt')
TEST_PINS = os.path.join('env', 'test-requirements.txt')
# The pins have wheels for these only (numpy 1.26.4: up to 3.12; scipy 1.17.1: from 3.11);
# pyproject.toml's requires-python says the same.
PYTHONS = ((3, 11), (3, 12))
MPI_PACKAGES = ['openmpi-bin', 'libopenmpi-dev']
COMPILE_TRIES = 3  # Jittor exits early ("please rerun") after rebuilding its helpers
READY = ('import jittor_sbvsr, jittor_sbvsr.runtime as r; r.select_device("auto"); '
         'print("ready:", r.describe())')


class SetupError(Exception):
    """A problem reported as one ``error:`` line."""


@dataclass
class Platform:
    """What the plan depends on; :func:`current` reads it from this machine, tests fake it."""
    windows: bool
    root: bool
    which: object = shutil.which
    env: dict = field(default_factory=dict)
    version: tuple = (3, 11)
    python: str = sys.executable


def current():
    return Platform(windows=os.name == 'nt', root=hasattr(os, 'geteuid') and os.geteuid() == 0,
                    which=shutil.which, env=dict(os.environ), version=tuple(sys.version_info[:2]),
                    python=sys.executable)


@dataclass
class Step:
    """One line on the screen. ``argv`` None: a note, nothing runs. ``retry_after``: run it and
    try ``argv`` again when ``argv`` fails. ``optional``: a failure is a warning. ``until_ready``:
    run it up to ``tries`` times, until a line of its output starts with ``ready:``."""
    title: str
    argv: list = None
    env: dict = None
    retry_after: list = None
    optional: bool = False
    until_ready: bool = False
    tries: int = 1
    writes: list = field(default_factory=list)


def venv_python(venv, windows):
    return os.path.join(venv, 'Scripts', 'python.exe') if windows else os.path.join(venv, 'bin', 'python')


def _mpi_steps(plat):
    """Open MPI for multi-process training: Linux only (Jittor has no MPI on Windows)."""
    if plat.windows:
        return [Step('Open MPI: not used on Windows (training runs in one process)')]
    if plat.which('mpicc') and plat.which('mpirun'):
        return [Step(f'Open MPI: found ({plat.which("mpirun")})')]
    if plat.env.get('SBVSR_SKIP_MPI', '0') == '1':
        return [Step('Open MPI: skipped (SBVSR_SKIP_MPI=1); training runs in one process')]
    if plat.root and plat.which('apt-get'):
        apt = [plat.which('apt-get'), 'install', '-y', '-q', '--no-install-recommends'] + MPI_PACKAGES
        return [Step(f'Open MPI: apt-get install {" ".join(MPI_PACKAGES)}', apt,
                     env={'DEBIAN_FRONTEND': 'noninteractive'},
                     retry_after=[plat.which('apt-get'), 'update', '-q'], optional=True)]
    return [Step('Open MPI: not found; training runs in one process (for mpirun training: '
                 'sudo apt-get install openmpi-bin libopenmpi-dev)')]


def plan(venv, test, plat):
    """The steps for a set-up into ``venv`` (with the test tools if ``test``) on ``plat``."""
    py = venv_python(venv, plat.windows)
    steps = []
    if os.path.exists(py):
        steps.append(Step(f'virtual environment: {venv} (exists)'))
    else:
        if plat.version not in PYTHONS:
            have = '.'.join(map(str, plat.version))
            ok = ' or '.join('.'.join(map(str, v)) for v in PYTHONS)
            hint = 'py -3.11 env\\setup.py' if plat.windows else 'PYTHON=python3.11 env/setup.sh'
            raise SetupError(f'Python {have} cannot install the pins (numpy 1.26.4, scipy 1.17.1 have '
                             f'wheels for Python {ok} only); run it with one of those, e.g. {hint}')
        steps.append(Step(f'virtual environment: {venv}', [plat.python, '-m', 'venv', venv], writes=[venv]))
    pip = [py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '-r']
    steps.append(Step(f'runtime packages ({PINS})', pip + [os.path.join(ROOT, PINS)]))
    if test:
        steps.append(Step(f'test tools ({TEST_PINS})', pip + [os.path.join(ROOT, TEST_PINS)]))
    steps.append(Step('oneDNN 2.2 inside the environment (fast CPU convolutions)',
                      [py, os.path.join(ROOT, 'tools', 'install_onednn.py')],
                      writes=[os.path.join(venv, 'onednn')]))
    steps.extend(_mpi_steps(plat))
    steps.append(Step('Jittor and the CUDA toolkit (changes only where a CUDA driver and nvcc need them)',
                      [py, os.path.join(ROOT, 'tools', 'jittor_cuda_patch.py')]))
    steps.append(Step('compiling Jittor once for this environment (a few minutes, once per user)',
                      [py, '-c', READY], until_ready=True, tries=COMPILE_TRIES,
                      env={'PYTHONIOENCODING': 'utf-8'}))  # what _compile reads, whatever the console's
    return steps


def _call(argv, env):
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


def _compile(step, env):
    """Run ``step.argv`` until it prints ``ready:``; returns that line or None."""
    for _ in range(step.tries):
        proc = subprocess.Popen(step.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, encoding='utf-8', errors='replace')
        ready = None
        for line in proc.stdout:
            print(line, end='', flush=True)
            if line.startswith('ready:'):
                ready = line.strip()
        proc.wait()
        if ready:
            return ready
    return None


def run(steps, plat):
    """Carry out ``steps``, one numbered line each; returns the ``ready:`` line of the compile."""
    ready = None
    for i, step in enumerate(steps, 1):
        print(f'setup [{i}/{len(steps)}] {step.title}', flush=True)
        if step.argv is None:
            continue
        env = dict(plat.env, **(step.env or {}))
        if step.until_ready:
            ready = _compile(step, env)
            if ready is None:
                raise SetupError(f'Jittor did not start after {step.tries} tries (see above)')
            continue
        rc = _call(step.argv, env)
        if rc != 0 and step.retry_after:
            rc = _call(step.retry_after, env) or _call(step.argv, env)
        if rc != 0:
            if not step.optional:
                raise SetupError(f'{step.title}: {os.path.basename(step.argv[0])} exited with {rc} (see above)')
            print(f'warning: setup: {step.title} failed (exit {rc}); continuing without it', file=sys.stderr)
    return ready


def _shown(path):
    """``path`` relative to the checkout when it is inside it (as the README writes it)."""
    try:
        rel = os.path.relpath(path, ROOT)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith('..') else rel


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--test', action='store_true', help='also install the test tools (pytest, torch)')
    ap.add_argument('--venv', default=os.path.join(ROOT, '.venv'),
                    help='the virtual environment to make or update (default: .venv in the checkout)')
    args = ap.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # a path the console cannot encode still prints
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace')
    plat = current()
    venv = os.path.abspath(args.venv)
    start = time.monotonic()  # host time
    try:
        ready = run(plan(venv, args.test, plat), plat)
    except SetupError as e:
        print(f'error: setup: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('error: setup: interrupted; run it again to finish', file=sys.stderr)
        return 130
    took = time.monotonic() - start  # host time
    print(f'setup: done in {int(took // 60)} min {int(took % 60)} s; {ready}. '
          f'Try, in {ROOT}: {_shown(venv_python(venv, plat.windows))} inference.py --demo')
    return 0


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    from jittor_sbvsr_launcher import safe_console  # a CJK path on a GBK or ASCII console
    safe_console()
    sys.exit(main())

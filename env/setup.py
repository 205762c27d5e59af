#!/usr/bin/env python3
"""Set up jittor-sbvsr on Linux, WSL2 or Windows: one installer, standard library only.

It makes a virtual environment (``.venv``; ``bin/`` on Linux, ``Scripts\\``
on Windows) with the pinned runtime, installs oneDNN inside it (so every
user and every HOME of this install has fast CPU convolutions; Jittor's
compile cache stays per user), makes the changes Jittor 1.3.8.5 needs for
the CUDA toolkit found, installs Open MPI as root on Debian/Ubuntu, and
compiles Jittor once, so that the first real run does not look like a hang.

Before anything starts, :func:`preflight` checks what the set-up will need
(Linux/WSL2: Python's venv and headers, g++, nvcc beside an NVIDIA driver;
Windows: python.org's 64-bit Python with its headers, the VC++
redistributable, free disk for what Jittor downloads) and, when something is
missing, prints the commands that fix it on one screen and changes nothing.

What it will do is decided by :func:`plan` from a :class:`Platform` (the
operating system, root or not, the commands on PATH, the environment) and
carried out by :func:`run`, so each platform's branch is checked on any
machine by faking the platform (tests/test_setup.py).

Usage: python env/setup.py [--test] [--cpu] [--venv DIR] [--wheels DIR]
    (Windows: py -3.11 env\\setup.py; env/setup.sh is the same on Linux)
Environment: SBVSR_SKIP_MPI=1 skips Open MPI.
``--wheels DIR``: an offline set-up on a machine whose Python already has most
packages (a GPU server's image): the venv sees the system's packages, and
exactly the wheels in DIR are installed over them, nothing downloaded (no
oneDNN: CPU convolutions are slow there). bench/gpu_check/prepare.py makes
such a folder.

One file, standard library only: it runs with whatever Python the user has,
before anything is installed, so it cannot import the package or a helper
module beside it (it reads jittor_sbvsr/runtime.py by its path).
"""
import argparse
import codecs
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PINS = os.path.join('env', 'jittor-1.3.8.5.txt')
TEST_PINS = os.path.join('env', 'test-requirements.txt')
# The pins have wheels for these only (numpy 1.26.4: up to 3.12; scipy 1.17.1: from 3.11);
# pyproject.toml's requires-python says the same.
PYTHONS = ((3, 11), (3, 12))
MPI_PACKAGES = ['openmpi-bin', 'libopenmpi-dev']
# where Jittor 1.3.8.5 looks for nvcc after PATH (compiler.py)
NVCC_PLACES = ('/usr/local/cuda/bin/nvcc', '/usr/bin/nvcc', '/opt/cuda/bin/nvcc')
COMPILE_TRIES = 3  # Jittor exits early ("please rerun") after rebuilding its helpers
READY = ('import jittor_sbvsr, jittor_sbvsr.runtime as r; r.select_device("auto"); '
         'print("ready:", r.describe())')


# jittor_sbvsr/runtime.py (standard library only) read by its path: the package itself needs the
# packages this installs. Its knowledge of drivers and DLLs is the one the runs use.
_spec = importlib.util.spec_from_file_location('_sbvsr_runtime', os.path.join(ROOT, 'jittor_sbvsr', 'runtime.py'))
runtime = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runtime)

APT = re.compile(r'(sudo )?apt-get install -y ([\w.+-]+(?: [\w.+-]+)*)')  # a fix that is one apt-get install
GIB = 2 ** 30
# Free disk the set-up needs, roughly (measured sizes rounded up): the environment (numpy, scipy,
# scikit-image, Jittor; torch with --test), Jittor's compile cache, and on Windows what Jittor
# downloads on its first start into its home: its MSVC compiler, with an NVIDIA driver CUDA 11.2 + cuDNN 8.
DISK = {'venv': 2 * GIB, 'test': 3 * GIB, 'cache': 1 * GIB, 'msvc': 2 * GIB, 'cuda': 5 * GIB}


class SetupError(Exception):
    """A problem reported as one ``error:`` line."""


def _free_disk(path):
    """(the volume, free bytes) of the nearest existing folder of ``path``."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return os.stat(path).st_dev, shutil.disk_usage(path).free


def _output(argv):
    """What a command prints (stdout and stderr), '' when it cannot run."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, encoding='utf-8', errors='replace', timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ''
    return r.stdout + r.stderr


@dataclass
class Platform:
    """What the plan and the pre-flight depend on; :func:`current` reads it from this machine,
    tests fake it (``path``: ntpath for Windows' paths)."""
    windows: bool
    root: bool
    which: object = shutil.which
    env: dict = field(default_factory=dict)
    version: tuple = (3, 11)
    python: str = sys.executable
    wsl: bool = False
    build: str = sys.version  # python.org's Windows builds say 'MSC v.19xx 64 bit (AMD64)'
    sys_platform: str = sys.platform  # 'win32' for python.org's and MinGW's, 'cygwin'/'msys' for POSIX layers
    prefix: str = sys.base_prefix  # the Python installation (not a venv it runs in)
    include: str = sysconfig.get_paths()['include']  # its C headers (Python.h), which Jittor compiles against
    has_module: object = lambda name: importlib.util.find_spec(name) is not None
    isfile: object = os.path.isfile
    isdir: object = os.path.isdir
    load: object = None  # loads a shared library (raises OSError): ctypes.CDLL by default
    disk: object = _free_disk  # path -> (volume, free bytes)
    home: str = ''  # Jittor's home (its cache and downloads go under .cache/jittor)
    path: object = os.path
    output: object = _output  # argv -> what the command prints ('' when it cannot run)


def _is_wsl():
    try:
        with open('/proc/version', encoding='utf-8', errors='replace') as f:
            return 'microsoft' in f.read().lower()
    except OSError:
        return False


def current():
    return Platform(windows=os.name == 'nt', root=hasattr(os, 'geteuid') and os.geteuid() == 0,
                    which=shutil.which, env=dict(os.environ), version=tuple(sys.version_info[:2]),
                    python=sys.executable, wsl=_is_wsl(), home=runtime.jittor_home())


# ------------------------------------------------------------ pre-flight ----

def _python_problems(plat, new_venv):
    """The Python this runs with: a version the pins have wheels for (only for a new venv), the
    build Jittor works with on Windows, its headers."""
    out: list = []
    py = f'{plat.version[0]}.{plat.version[1]}'
    if new_venv and plat.version not in PYTHONS:
        ok = ' or '.join('.'.join(map(str, v)) for v in PYTHONS)
        fix = ('winget install --id Python.Python.3.11 -e, then py -3.11 env\\setup.py' if plat.windows
               else f'{_apt(plat, "python3.11", "python3.11-venv", "python3.11-dev")}, then '
               'PYTHON=python3.11 env/setup.sh')
        return [(f'Python {py} cannot install the pins (numpy 1.26.4, scipy 1.17.1 have wheels for '
                 f'Python {ok} only)', fix)]
    python_org = 'winget install --id Python.Python.3.11 -e, then py -3.11 env\\setup.py'
    if plat.sys_platform in ('cygwin', 'msys'):
        return [(f"this Python ({plat.python}) is Cygwin's or MSYS2's, a POSIX layer on Windows: Jittor runs on "
                 "python.org's Windows Python (or in WSL2)", python_org)]
    if plat.windows:
        if 'MSC v.' not in plat.build or '64 bit' not in plat.build:
            out.append((f'this Python ({plat.python}) is not a 64-bit python.org build (an MSYS2, MinGW or '
                        '32-bit one): Jittor links with MSVC against python.org\'s', python_org))
        elif 'WindowsApps' in plat.prefix:
            out.append(('this is the Microsoft Store\'s Python, which runs sandboxed; Jittor is set up and '
                        'checked with python.org\'s', python_org))
        lib = plat.path.join(plat.prefix, 'libs', f'python3{plat.version[1]}.lib')
        if not (plat.isfile(plat.path.join(plat.include, 'Python.h')) and plat.isfile(lib)):
            out.append(("Python's C headers and python3X.lib (Jittor compiles and links its operators "
                        'with them) are missing', 'winget install --id Python.Python.3.11 -e --force '
                        '(python.org\'s installer puts them in by default)'))
    else:
        if new_venv and not plat.has_module('ensurepip'):
            out.append((f"Python {py}'s venv cannot install pip (Debian and Ubuntu ship it apart)",
                        _apt(plat, f'python{py}-venv')))
        if not plat.isfile(plat.path.join(plat.include, 'Python.h')):
            out.append((f"Python {py}'s C headers (Python.h), which Jittor compiles against, are missing",
                        _apt(plat, f'python{py}-dev')))
    return out


def _apt(plat, *packages):
    sudo = '' if plat.root else 'sudo '
    if plat.which('apt-get'):
        return f'{sudo}apt-get install -y {" ".join(packages)}'
    return f'install {", ".join(packages)} (or what your distribution names them) with its package manager'


def _compiler_problems(plat):
    """Linux: g++ for Jittor (cc_path chooses another); beside an NVIDIA driver, nvcc unless the
    set-up is for the CPU (--cpu, or nvcc_path set empty). Windows needs neither: Jittor downloads
    its own MSVC and CUDA."""
    if plat.windows:
        return []
    out = []
    cc = plat.env.get('cc_path')
    if not (plat.isfile(cc) if cc else plat.which('g++')):
        out.append((f'no C++ compiler ({cc or "g++"}): Jittor compiles its operators with it', _apt(plat, 'g++')))
    nvcc = plat.env.get('nvcc_path')
    if nvcc == '' or not _driver(plat):
        return out
    nvcc = nvcc if nvcc and plat.isfile(nvcc) else None if nvcc else (
        plat.which('nvcc') or next((p for p in NVCC_PLACES if plat.isfile(p)), None))
    if nvcc:
        return out + _host_compiler_problems(plat, nvcc, cc or plat.which('g++'))
    where = 'the Windows driver, seen from WSL2' if plat.wsl else 'libcuda.so.1'
    out.append((f'an NVIDIA driver ({where}) but no CUDA toolkit (nvcc): Jittor would download its own '
                'CUDA 11.2 (about 1 GB), which does not build with a g++ newer than 10',
                f'{_apt(plat, "nvidia-cuda-toolkit")} (or NVIDIA\'s CUDA 12 toolkit'
                f'{" for WSL-Ubuntu" if plat.wsl else ""}); or set up for the CPU: '
                f'{_again(plat)} --cpu'))
    return out


def _host_compiler_problems(plat, nvcc, cc):
    """The g++ that this nvcc accepts (runtime.gcc_problem, the fix: cc_path), asked before anything
    is installed rather than when Jittor first builds for the GPU."""
    release = re.search(r'release (\d+)\.(\d+)', plat.output([nvcc, '--version']))
    version = re.match(r'\s*(\d+)', plat.output([cc, '-dumpversion'])) if cc else None
    if not release or not version:
        return []
    problem = runtime.gcc_problem((int(release[1]), int(release[2])), int(version[1]))
    return [problem] if problem else []


def _driver(plat):
    """The NVIDIA driver that loads (runtime.cuda_driver, WSL2's included), unless the set-up is for
    the CPU (nvcc_path='', which --cpu sets)."""
    if plat.env.get('nvcc_path') == '':
        return None
    return runtime.cuda_driver(plat.load, runtime.CUDA_DRIVERS['nt' if plat.windows else 'posix'])


def _windows_problems(plat):
    if not plat.windows:
        return []
    missing = runtime.vc_runtime_missing(plat.load)
    if missing:
        return [(f'the Visual C++ 2015-2022 redistributable ({", ".join(missing)} not found): Jittor\'s '
                 'compiled code and oneDNN load it', runtime.VC_REDIST_FIX)]
    return []


def _disk_problems(plat, venv, test, new_venv):
    """Free disk for a new environment, and in Jittor's home for its cache and what Jittor downloads
    there on Windows (unless it is there already)."""
    needs = [(venv, DISK['venv'] + DISK['test'] * test, 'the environment')] if new_venv else []
    home = plat.path.join(plat.home, '.cache', 'jittor') if plat.home else None
    if home:
        what, size = "Jittor's compile cache", DISK['cache']
        if plat.windows and not plat.isdir(plat.path.join(home, 'msvc')):
            what, size = what + ', its MSVC download', size + DISK['msvc']
        if plat.windows and _driver(plat) and not plat.isdir(plat.path.join(home, 'jtcuda')):
            what, size = what + ' and CUDA 11.2 download', size + DISK['cuda']
        needs.append((home, size, what))
    by_volume = {}
    for path, size, what in needs:
        volume, free = plat.disk(path)
        total, _, whats, paths = by_volume.get(volume, (0, free, [], []))
        by_volume[volume] = (total + size, free, whats + [what], paths + [path])
    return [(f'{" and ".join(whats)} need about {total / GIB:.0f} GB free, {free / GIB:.1f} GB are free '
             f'where {paths[-1]} is', 'free some space there' + ('' if not plat.windows else
                                                                 ', or set JITTOR_HOME to a folder on another drive'))
            for total, free, whats, paths in by_volume.values() if free < total]


def _again(plat):
    return 'py -3.11 env\\setup.py' if plat.windows else 'env/setup.sh'


def preflight(venv, test, plat, checks=()):
    """Everything the set-up will need that ``plat`` lacks, as [(problem, the command that fixes it)];
    [] when nothing is missing. ``checks``: more providers, each a callable of no arguments that returns
    None, one (problem, fix) pair or a list of them (e.g. the CUDA checks of tools/jittor_cuda_patch.py)."""
    new_venv = not os.path.exists(venv_python(venv, plat.windows))
    found = (_python_problems(plat, new_venv) + _compiler_problems(plat) + _windows_problems(plat)
             + _disk_problems(plat, venv, test, new_venv))
    for check in checks:
        got = check()
        found += [] if not got else [got] if isinstance(got[0], str) else list(got)
    return found


# More pre-flight checks: callables of no arguments, each returning None, a (problem, fix) pair or a
# list of them.
CHECKS: list = []


def preflight_report(problems, plat):
    """The screen that says what is missing and the commands that fix it (apt-get installs as one)."""
    lines = [f'error: setup: {len(problems)} thing{"s" * (len(problems) > 1)} this set-up needs '
             f'{"are" if len(problems) > 1 else "is"} missing; nothing was changed:']
    lines += [f'  - {problem}' for problem, _ in problems]
    apt = [APT.fullmatch(fix) for _, fix in problems]
    fixes = [fix for (_, fix), m in zip(problems, apt) if not m]
    packages = list(dict.fromkeys(p for m in apt if m for p in m.group(2).split()))
    if packages:
        sudo = 'sudo ' if any(m.group(1) for m in apt if m) else ''
        fixes.insert(0, f'{sudo}apt-get install -y {" ".join(packages)}')
    lines.append('Fix it with:')
    lines += [f'  {fix}' for fix in dict.fromkeys(fixes)]
    lines.append(f'then run the set-up again ({_again(plat)}).')
    return '\n'.join(lines)


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


def plan(venv, test, plat, wheels=None):
    """The steps for a set-up into ``venv`` (with the test tools if ``test``) on ``plat``; offline
    from the folder ``wheels`` when given."""
    py = venv_python(venv, plat.windows)
    steps = []
    if os.path.exists(py):
        steps.append(Step(f'virtual environment: {venv} (exists)'))
    else:  # a Python the pins have wheels for (the pre-flight checked it)
        shared = ['--system-site-packages'] if wheels else []
        steps.append(Step(f'virtual environment: {venv}', [plat.python, '-m', 'venv', *shared, venv], writes=[venv]))
    if wheels:
        found = sorted(os.path.join(wheels, n) for n in os.listdir(wheels) if n.endswith('.whl'))
        if not found:
            raise SetupError(f'--wheels {wheels}: no .whl files there (bench/gpu_check/prepare.py makes them)')
        steps.append(Step(f'packages from {wheels} (offline; the others are the system Python\'s)',
                          [py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-index',
                           '--no-deps', *found]))
        steps.append(Step('oneDNN: not installed (offline set-up): CPU convolutions are ~80x slower'))
    else:
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
    # a g++ nvcc refuses stops here, with the fix; no nvcc or no cuDNN: runs use the CPU or
    # Jittor's own convolutions (runtime.py), which the compile below then agrees with
    steps.append(Step('CUDA: nvcc, host compiler and cuDNN as Jittor will find them',
                      [py, os.path.join(ROOT, 'tools', 'jittor_cuda_patch.py'), '--check']))
    steps.append(Step('compiling Jittor once for this environment (a few minutes, once per user)',
                      [py, '-c', READY], until_ready=True, tries=COMPILE_TRIES,
                      env={'PYTHONIOENCODING': 'utf-8'}))  # what _compile reads, whatever the console's
    return steps


def _call(argv, env):
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


def _relay(stream, out):
    """Copy a child's output (UTF-8 bytes) to ``out`` as it comes; returns its ``ready:`` line or None.

    A progress bar (Jittor's downloads of MSVC and CUDA: tqdm redrawing one line after a '\\r')
    stays one line: a terminal gets the bytes as they are and redraws it in place; elsewhere (a log)
    each line is written once it ends, as it looks then.
    """
    tty = out.isatty()
    decode = codecs.getincrementaldecoder('utf-8')('replace').decode
    pending, ready = '', None
    for chunk in iter(lambda: stream.read1(1 << 16), b''):
        text = decode(chunk)
        if tty:
            out.write(text)
            out.flush()
        *lines, pending = (pending + text).split('\n')
        for line in lines:
            shown = next((part for part in reversed(line.split('\r')) if part), '')
            if not tty:
                out.write(shown + '\n')
                out.flush()
            if shown.startswith('ready:'):
                ready = shown.strip()
    if pending and not tty:
        out.write(pending.rsplit('\r', 1)[-1] + '\n')
    return ready


def _compile(step, env):
    """Run ``step.argv`` until it prints ``ready:``; returns that line or None."""
    for _ in range(step.tries):
        proc = subprocess.Popen(step.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        ready = _relay(proc.stdout, sys.stdout)
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
    ap.add_argument('--cpu', action='store_true',
                    help='set up for the CPU only, even beside an NVIDIA driver (nvcc_path set empty: '
                         'Jittor neither looks for nor downloads CUDA)')
    ap.add_argument('--venv', default=os.path.join(ROOT, '.venv'),
                    help='the virtual environment to make or update (default: .venv in the checkout)')
    ap.add_argument('--wheels', default=None,
                    help='offline: install exactly these wheels over the system Python\'s packages (no downloads)')
    args = ap.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # a path the console cannot encode still prints
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace')
    plat = current()
    if args.cpu:
        plat.env['nvcc_path'] = ''  # every step's environment, the compile's too
    venv = os.path.abspath(args.venv)
    missing = preflight(venv, args.test, plat, CHECKS)
    if missing:
        print(preflight_report(missing, plat), file=sys.stderr)
        return 1
    start = time.monotonic()  # host time
    try:
        offline = [os.path.abspath(args.wheels)] if args.wheels else []
        ready = run(plan(venv, args.test, plat, *offline), plat)
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

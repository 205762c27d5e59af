"""Adapt the installed Jittor 1.3.8.5 to the CUDA toolkit and cuDNN it will build with.

Jittor 1.3.8.5 was made for CUDA 11/12 with cuDNN 8; it compiles its CUDA
sources on the user's machine, and with CUDA 13 or cuDNN 9 that fails:
- CUDA 13 removed ``cudaDeviceProp.computeMode`` and ``.clockRate``, which
  Jittor's ``helper_cuda.h`` reads (every CUDA translation unit fails);
- Jittor caps the target architecture at sm_89, so an H100/H200 (sm_90)
  gets no kernel image: the cap becomes 90;
- CUDA 13's CUB refuses C++14: nvcc gets ``-std=c++17``;
- cuDNN 9 has no legacy RNN API (``cudnnSetRNNDescriptor_v6``...): Jittor's
  cuDNN RNN ops, which use it, are removed (the project uses no RNN).

``env/setup.sh`` runs this once. It changes nothing without a CUDA driver
(a CPU-only set-up, even with an nvcc on it), without an nvcc, or with
CUDA 11/12 and cuDNN 8. Every change is made only where it is missing, so
running it again changes no file; a text it does not find (another Jittor
version) is reported as a warning, and the file is left as it is.
``pip install --force-reinstall jittor==1.3.8.5`` undoes it all.

Usage: tools/jittor_cuda_patch.py [--jittor-dir DIR]
"""
import argparse
import glob
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APPLIED = 'applied'
ALREADY = 'already applied'
MISSING = 'pattern not found'

# (name, file, old text, new text). The new text must contain a marker that
# the old one lacks; Jittor's files use CRLF, written here as '\n'.
CUDA13_EDITS = [
    ('cudaDeviceProp.computeMode (removed in CUDA 13)', 'extern/cuda/inc/helper_cuda.h',
     'deviceProp.computeMode', 'cudaComputeModeDefault /* jittor-sbvsr: removed in CUDA 13 */'),
    ('cudaDeviceProp.clockRate (removed in CUDA 13)', 'extern/cuda/inc/helper_cuda.h',
     'deviceProp.clockRate', '1000000 /* jittor-sbvsr: removed in CUDA 13 */'),
    ('max_arch 89 -> 90 (sm_90)', 'compiler.py',
     '    max_arch = 89\n', '    max_arch = 90  # jittor-sbvsr: sm_90\n'),
    ('nvcc -std=c++14 -> c++17 (CUDA 13 CUB)', 'compiler.py',
     '        nvcc_flags = nvcc_flags.replace("-Wall", "")\n',
     '        nvcc_flags = nvcc_flags.replace("-Wall", "")\n'
     '        nvcc_flags = nvcc_flags.replace("-std=c++14", "-std=c++17")  # jittor-sbvsr: CUDA 13\n'),
]
RNN_CHANGE = 'cuDNN RNN ops removed (cuDNN 9 has no legacy RNN API)'


class PatchError(Exception):
    """A problem reported as one line by main()."""


def _clear_pycache(path):
    if path.endswith('.py'):
        stem = os.path.splitext(os.path.basename(path))[0]
        for pyc in glob.glob(os.path.join(os.path.dirname(path), '__pycache__', stem + '.*.pyc')):
            os.remove(pyc)


def edit_text(path, old, new):
    """Replace every ``old`` in ``path`` that is not already part of ``new``; returns a status.

    Keeps the file's line endings ('\\n' in old/new stands for them), writes
    atomically and drops the file's stale bytecode.
    """
    with open(path, newline='', encoding='utf-8') as f:
        text = f.read()
    nl = '\r\n' if '\r\n' in text else '\n'
    old, new = old.replace('\n', nl), new.replace('\n', nl)
    edited = new.join(part.replace(old, new) for part in text.split(new))
    if edited == text:
        return ALREADY if new in text else MISSING
    tmp = path + '.sbvsr-tmp'
    with open(tmp, 'w', newline='', encoding='utf-8') as f:
        f.write(edited)
    shutil.copymode(path, tmp)
    os.replace(tmp, path)
    _clear_pycache(path)
    return APPLIED


def remove_cudnn_rnn(jittor_dir):
    cudnn = os.path.join(jittor_dir, 'extern', 'cuda', 'cudnn')
    if not os.path.isdir(cudnn):
        return MISSING
    files = sorted(glob.glob(os.path.join(cudnn, '*', 'cudnn_rnn*')))
    for path in files:
        os.remove(path)
    return APPLIED if files else ALREADY


def patch_jittor(jittor_dir, cuda_version, cudnn_major):
    """Make the changes Jittor 1.3.8.5 in ``jittor_dir`` needs for this CUDA and cuDNN.

    ``cuda_version`` is (major, minor), ``cudnn_major`` an int or None (no
    cuDNN found). Returns [(change, status)] with status APPLIED, ALREADY or
    MISSING; an empty list when nothing is needed (CUDA 11/12, cuDNN 8).
    """
    if not os.path.isfile(os.path.join(jittor_dir, 'compiler.py')):
        raise PatchError(f'{jittor_dir} is not a Jittor package folder (no compiler.py)')
    done = []
    if tuple(cuda_version) >= (13,):
        for name, rel, old, new in CUDA13_EDITS:
            path = os.path.join(jittor_dir, *rel.split('/'))
            done.append((name, edit_text(path, old, new) if os.path.isfile(path) else MISSING))
    if cudnn_major is not None and cudnn_major >= 9:
        done.append((RNN_CHANGE, remove_cudnn_rnn(jittor_dir)))
    return done


# ------------------------------------------------------------ detection ----

def installed_jittor_dir():
    """The folder of the jittor package this python would import (not importing it)."""
    spec = importlib.util.find_spec('jittor')
    if spec is None or not spec.submodule_search_locations:
        raise PatchError('Jittor is not installed for this python (pip install -r env/jittor-1.3.8.5.txt)')
    return list(spec.submodule_search_locations)[0]


def _runtime():
    """jittor_sbvsr.runtime, imported on first use (it does not import jittor)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from jittor_sbvsr import runtime
    return runtime


def driver_present():
    return _runtime().cuda_driver_present()


def find_nvcc():
    """The nvcc Jittor 1.3.8.5 would use: None for none, 'jtcuda' for its own download."""
    if 'nvcc_path' in os.environ:
        path = os.environ['nvcc_path']
        if path and not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise PatchError(f'nvcc_path={path} is not an executable file')
        return path or None
    if os.path.isdir(os.path.join(_runtime().jittor_home(), '.cache', 'jittor', 'jtcuda')):
        return 'jtcuda'
    for cand in (shutil.which('nvcc'), '/usr/local/cuda/bin/nvcc', '/usr/bin/nvcc', '/opt/cuda/bin/nvcc'):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def parse_cuda_version(text):
    m = re.search(r'release (\d+)\.(\d+)', text)
    if not m:
        raise PatchError(f'cannot read a CUDA version from nvcc --version: {" ".join(text.split())[:200]!r}')
    return int(m.group(1)), int(m.group(2))


def nvcc_version(nvcc):
    try:
        r = subprocess.run([nvcc, '--version'], capture_output=True, text=True, timeout=60, encoding='utf-8')
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PatchError(f'{nvcc} --version failed: {e}') from None
    return parse_cuda_version(r.stdout + r.stderr)


def cudnn_major(nvcc):
    """cuDNN's major version from the first cudnn_version.h where Jittor and pip put it; None if none."""
    arch = platform.machine()
    cuda_include = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), 'include')
    dirs = [cuda_include, os.path.join(cuda_include, '..', 'targets', f'{arch}-linux', 'include'),
            '/usr/include', f'/usr/include/{arch}-linux-gnu']
    for sp in dict.fromkeys([sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']]):
        dirs.append(os.path.join(sp, 'nvidia', 'cudnn', 'include'))
    for d in dirs:
        header = os.path.join(d, 'cudnn_version.h')
        if os.path.isfile(header):
            with open(header, errors='replace', encoding='utf-8') as f:
                m = re.search(r'#define\s+CUDNN_MAJOR\s+(\d+)', f.read())
            if m:
                return int(m.group(1))
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--jittor-dir', help='the installed jittor package (default: the one this python imports)')
    args = ap.parse_args(argv)
    tag = 'jittor_cuda_patch:'
    try:
        # First, before anything else is looked at: importing jittor_sbvsr
        # hides nvcc from Jittor (nvcc_path='') exactly when there is no driver.
        if not driver_present():
            print(tag, 'no CUDA driver (libcuda.so.1): CPU-only set-up, Jittor left as it is')
            return 0
        jittor_dir = args.jittor_dir or installed_jittor_dir()
        nvcc = find_nvcc()
        if nvcc is None:
            print(tag, 'no nvcc (nvcc_path, PATH, /usr/local/cuda/bin): Jittor left as it is')
            return 0
        if nvcc == 'jtcuda':
            print(tag, 'Jittor uses the CUDA 11 it downloaded (jtcuda): Jittor left as it is')
            return 0
        cuda, cudnn = nvcc_version(nvcc), cudnn_major(nvcc)
        found = f'CUDA {cuda[0]}.{cuda[1]} ({nvcc}), cuDNN {cudnn if cudnn is not None else "not found"}'
        done = patch_jittor(jittor_dir, cuda, cudnn)
    except (PatchError, OSError) as e:
        print(f'error: {tag} {e}', file=sys.stderr)
        return 2
    if not done:
        print(tag, f'{found}: Jittor 1.3.8.5 needs no change')
    for change, status in done:
        if status == MISSING:
            print(f'warning: {tag} {found}: {change}: {status} in {jittor_dir} '
                  '(not Jittor 1.3.8.5?); left as it is', file=sys.stderr)
        else:
            print(tag, f'{found}: {change}: {status}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

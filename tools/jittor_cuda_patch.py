"""Adapt the installed Jittor 1.3.8.5 to the CUDA toolkit, cuDNN and GPU it will build for.

Jittor 1.3.8.5 was made for CUDA 11/12 with cuDNN 8; it compiles its CUDA
sources on the user's machine for the GPU's architecture, and:
- it caps that architecture at sm_89, and builds machine code only (no
  PTX), so an H100/H200 (sm_90) or a Blackwell GPU gets no kernel it can
  load. The cap follows nvcc instead: sm_90 from CUDA 11.8, sm_120 from
  12.8 (sm_100 B200, sm_120 RTX 50xx), sm_121 from 12.9; every CUDA 11.8+;
- CUDA 13 removed ``cudaDeviceProp.computeMode`` and ``.clockRate``, which
  Jittor's ``helper_cuda.h`` reads (every CUDA translation unit fails);
- CUDA 13's CUB refuses C++14: nvcc gets ``-std=c++17``;
- cuDNN 9 has no legacy RNN API (``cudnnSetRNNDescriptor_v6``...): Jittor's
  cuDNN RNN ops, which use it, are removed (the project uses no RNN); and it
  split its libraries differently: Jittor preloads cuDNN 8's
  ``libcudnn_{ops,cnn}_{infer,train}.so``, cuDNN 9's ``libcudnn_{ops,cnn}.so``
  instead.
It also says, as a warning, what no change can fix: a driver older than the
toolkit, a GPU newer than the toolkit (sm_100+ before CUDA 12.8), a GPU
CUDA 13 dropped (before sm_75). Where Jittor uses the CUDA 11.2 it downloads
itself (always on Windows unless ``nvcc_path`` is set) nothing is changed.

``env/setup.py`` runs this once. It changes nothing without a CUDA driver
(a CPU-only set-up, even with an nvcc on it), without an nvcc, or with
CUDA 11.0-11.7 and cuDNN 8. Every change is made only where it is missing,
so running it again changes no file; a text it does not find (another
Jittor version) is reported as a warning, and the file is left as it is.
``pip install --force-reinstall jittor==1.3.8.5`` undoes it all.

It also finds what Jittor will load, without changing anything
(:func:`findings`, one (problem, fix) pair each; ``--check`` prints them, and
the set-up runs it before it compiles): a driver without nvcc, a host g++
newer than nvcc accepts, cuDNN that Jittor will not find. cuDNN installed by
pip (``nvidia-cudnn-cu11/12``) is linked into ``<venv>/cudnn`` and Jittor's
search extended to it (:func:`link_pip_cudnn`), so the install, not a
user's cache, carries it.

Usage: tools/jittor_cuda_patch.py [--jittor-dir DIR] [--check]
"""
import argparse
import ctypes
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

WINDOWS = os.name == 'nt'
# The CUDA Jittor 1.3.8.5 downloads itself for a driver of CUDA 11.2 or newer (jtcuda,
# jittor_utils/install_cuda.py): on Windows always, unless nvcc_path is set.
JTCUDA = (11, 2)

APPLIED = 'applied'
ALREADY = 'already applied'
MISSING = 'pattern not found'

# (name, file, old text, new text). The new text must contain a marker that
# the old one lacks; Jittor's files use CRLF, written here as '\n'.
# The highest architecture each nvcc builds, from which on (Jittor's own caps below 11.8).
ARCH_CAPS = [((12, 9), 121), ((12, 8), 120), ((11, 8), 90)]
JITTOR_CAPS = [((11, 8), 89), ((11, 1), 86), ((11, 0), 80), ((0, 0), 75)]
ARCH_EDIT = ('max_arch 89 -> what nvcc builds (sm_90 from CUDA 11.8, sm_120 from 12.8)', 'compiler.py',
             '    max_arch = 89\n',
             '    max_arch = ' + ' else '.join(f'{cap} if nvcc_version >= {list(v)}' for v, cap in ARCH_CAPS)
             + ' else 89  # jittor-sbvsr: sm_90+\n')
CUDA13_EDITS = [
    ('cudaDeviceProp.computeMode (removed in CUDA 13)', 'extern/cuda/inc/helper_cuda.h',
     'deviceProp.computeMode', 'cudaComputeModeDefault /* jittor-sbvsr: removed in CUDA 13 */'),
    ('cudaDeviceProp.clockRate (removed in CUDA 13)', 'extern/cuda/inc/helper_cuda.h',
     'deviceProp.clockRate', '1000000 /* jittor-sbvsr: removed in CUDA 13 */'),
    ('nvcc -std=c++14 -> c++17 (CUDA 13 CUB)', 'compiler.py',
     '        nvcc_flags = nvcc_flags.replace("-Wall", "")\n',
     '        nvcc_flags = nvcc_flags.replace("-Wall", "")\n'
     '        nvcc_flags = nvcc_flags.replace("-std=c++14", "-std=c++17")  # jittor-sbvsr: CUDA 13\n'),
]
CUDNN9_EDIT = ('cuDNN 9 library names preloaded (libcudnn_ops, libcudnn_cnn)', 'compile_extern.py',
               'libs = ["libcudnn_ops_infer.so", "libcudnn_ops_train.so", "libcudnn_cnn_infer.so", '
               '"libcudnn_cnn_train.so"]',
               'libs = ["libcudnn_ops.so", "libcudnn_cnn.so"]  # jittor-sbvsr: cuDNN 9')
RNN_CHANGE = 'cuDNN RNN ops removed (cuDNN 9 has no legacy RNN API)'
CUDNN_MARK = 'jittor-sbvsr: cuDNN inside the install'  # runtime.CUDNN_EDIT_MARK
# Jittor searches cuDNN in the toolkit's folders and /usr only; pip's is linked into <venv>/cudnn
CUDNN_PIP_EDITS = [
    ('cuDNN inside the install searched (<venv>/cudnn)', 'compile_extern.py',
     'def search_file(dirs, name, prefer_version=()):\n',
     'def search_file(dirs, name, prefer_version=()):\n'
     '    dirs = list(dirs) + [os.path.join(sys.prefix, "cudnn", d) for d in ("include", "lib")]  # '
     + CUDNN_MARK + '\n'),
    ('cuDNN inside the install: its headers and library', 'compile_extern.py',
     '        link_flags = f"-l{lib_name} -L\\"{os.path.dirname(culib_path)}\\""\n',
     '        link_flags = f"-l{lib_name} -L\\"{os.path.dirname(culib_path)}\\""\n'
     '        if os.path.dirname(culib_path) == os.path.join(sys.prefix, "cudnn", "lib"):  # ' + CUDNN_MARK + '\n'
     '            link_flags += f" -I\\"{os.path.dirname(cuda_include_name)}\\""\n'
     '            ctypes.CDLL(culib_path, dlopen_flags)\n'),
]


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


def patch_jittor(jittor_dir, cuda_version, cudnn_major, pip_cudnn=False):
    """Make the changes Jittor 1.3.8.5 in ``jittor_dir`` needs for this CUDA and cuDNN.

    ``cuda_version`` is (major, minor), ``cudnn_major`` an int or None (no
    cuDNN found). Returns [(change, status)] with status APPLIED, ALREADY or
    MISSING; an empty list when nothing is needed (CUDA 11/12, cuDNN 8).
    """
    if not os.path.isfile(os.path.join(jittor_dir, 'compiler.py')):
        raise PatchError(f'{jittor_dir} is not a Jittor package folder (no compiler.py)')
    edits = []
    if tuple(cuda_version) >= (11, 8):
        edits.append(ARCH_EDIT)
    if tuple(cuda_version) >= (13,):
        edits.extend(CUDA13_EDITS)
    if cudnn_major is not None and cudnn_major >= 9:
        edits.append(CUDNN9_EDIT)
    if pip_cudnn:
        edits.extend(CUDNN_PIP_EDITS)
    done = []
    for name, rel, old, new in edits:
        path = os.path.join(jittor_dir, *rel.split('/'))
        done.append((name, edit_text(path, old, new) if os.path.isfile(path) else MISSING))
    if cudnn_major is not None and cudnn_major >= 9:
        done.append((RNN_CHANGE, remove_cudnn_rnn(jittor_dir)))
    return done


def built_arch(cuda_version, arch):
    """The architecture Jittor, once patched, builds machine code for on an ``arch`` GPU."""
    cap = next(cap for v, cap in ARCH_CAPS + JITTOR_CAPS if tuple(cuda_version) >= v)
    return min(arch, cap)


def problems(cuda_version, driver_version, archs):
    """What no change to Jittor fixes, one line each: driver too old, GPU too new or too old for nvcc."""
    cuda = f'{cuda_version[0]}.{cuda_version[1]}'
    out = []
    if driver_version is not None and driver_version[0] < cuda_version[0]:
        out.append(f'the driver supports CUDA {driver_version[0]}.{driver_version[1]} only, nvcc is CUDA {cuda}: '
                   'kernels it builds will not load; update the NVIDIA driver (or use an older CUDA toolkit)')
    for arch in sorted(set(archs)):
        built = built_arch(cuda_version, arch)
        if arch // 10 != built // 10:  # machine code runs only within one major architecture
            out.append(f'the GPU is sm_{arch}, CUDA {cuda} builds up to sm_{built}, which it cannot run: '
                       f'use CUDA {"12.8 or newer" if arch >= 100 else "11.8 or newer"}')
        if tuple(cuda_version) >= (13,) and arch < 75:
            out.append(f'the GPU is sm_{arch}, which CUDA {cuda} no longer builds for: use CUDA 12')
    return out


# ------------------------------------------------------------ detection ----

def installed_jittor_dir():
    """The folder of the jittor package this python would import (not importing it)."""
    spec = importlib.util.find_spec('jittor')
    if spec is None or not spec.submodule_search_locations:
        raise PatchError('Jittor is not installed for this python (pip install -r env/jittor-1.3.8.5.txt)')
    return list(spec.submodule_search_locations)[0]


def runtime_module():
    """jittor_sbvsr/runtime.py (standard library only): the package's own where it is imported, else
    read by its path, since importing the package would configure Jittor (and the set-up runs this
    tool before oneDNN is in place)."""
    if 'jittor_sbvsr.runtime' in sys.modules:
        return sys.modules['jittor_sbvsr.runtime']
    if '_sbvsr_runtime' not in sys.modules:
        spec = importlib.util.spec_from_file_location('_sbvsr_runtime',
                                                      os.path.join(ROOT, 'jittor_sbvsr', 'runtime.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules['_sbvsr_runtime'] = module
        spec.loader.exec_module(module)
    return sys.modules['_sbvsr_runtime']


def driver_present():
    return runtime_module().cuda_driver_present()


def gpu_info():
    """(the driver's CUDA version, [sm of each GPU]) from the driver; (None, []) where it says nothing."""
    try:
        cuda = ctypes.CDLL('nvcuda.dll' if os.name == 'nt' else 'libcuda.so.1')
    except OSError:
        return None, []
    v, n = ctypes.c_int(), ctypes.c_int()
    driver = (v.value // 1000, v.value % 1000 // 10) if cuda.cuDriverGetVersion(ctypes.byref(v)) == 0 else None
    archs = []
    if cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(n)) == 0:
        for i in range(n.value):
            dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            if (cuda.cuDeviceGet(ctypes.byref(dev), i) == 0  # 75, 76: compute capability major, minor
                    and cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) == 0
                    and cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) == 0):
                archs.append(major.value * 10 + minor.value)
    return driver, archs


def find_nvcc():
    """The nvcc Jittor 1.3.8.5 would use: None for none, 'jtcuda' for its own download."""
    if 'nvcc_path' in os.environ:
        path = os.environ['nvcc_path']
        if path and not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise PatchError(f'nvcc_path={path} is not an executable file')
        return path or None
    if WINDOWS or os.path.isdir(os.path.join(runtime_module().jittor_home(), '.cache', 'jittor', 'jtcuda')):
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


def _site_dirs():
    """This environment's package folders, and the system's when the venv sees them."""
    paths = [sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']]
    return list(dict.fromkeys(paths + [p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))]))


def cudnn_major(nvcc):
    """cuDNN's major version from the first cudnn_version.h where Jittor and pip put it; None if none."""
    arch = platform.machine()
    cuda_include = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), 'include')
    dirs = [cuda_include, os.path.join(cuda_include, '..', 'targets', f'{arch}-linux', 'include'),
            '/usr/include', f'/usr/include/{arch}-linux-gnu']
    for sp in _site_dirs():
        dirs.append(os.path.join(sp, 'nvidia', 'cudnn', 'include'))
    for d in dirs:
        header = os.path.join(d, 'cudnn_version.h')
        if os.path.isfile(header):
            with open(header, errors='replace', encoding='utf-8') as f:
                m = re.search(r'#define\s+CUDNN_MAJOR\s+(\d+)', f.read())
            if m:
                return int(m.group(1))
    return None


def pip_cudnn(site_dirs=None):
    """(include dir, lib dir) of cuDNN installed by pip (nvidia-cudnn-cu11/12) here, or None."""
    for sp in site_dirs or _site_dirs():
        inc, lib = (os.path.join(sp, 'nvidia', 'cudnn', d) for d in ('include', 'lib'))
        if os.path.isfile(os.path.join(inc, 'cudnn.h')) and glob.glob(os.path.join(lib, 'libcudnn.so*')):
            return inc, lib
    return None


def link_pip_cudnn(prefix, found):
    """Link pip's cuDNN into ``<prefix>/cudnn/{include,lib}`` under the names Jittor looks for
    (pip ships ``libcudnn.so.9``, the linker wants ``libcudnn.so``); returns that folder."""
    inc, lib = found
    home = os.path.join(prefix, 'cudnn')
    for sub, src, pattern in (('include', inc, 'cudnn*.h'), ('lib', lib, 'libcudnn*.so*')):
        os.makedirs(os.path.join(home, sub), exist_ok=True)
        for path in sorted(glob.glob(os.path.join(src, pattern))):
            names = {os.path.basename(path)}
            if sub == 'lib':
                names.add(re.sub(r'\.so\..*$', '.so', os.path.basename(path)))
            for name in names:
                dst = os.path.join(home, sub, name)
                if os.path.lexists(dst):
                    os.remove(dst)
                os.symlink(path, dst)
    return home


NO_NVCC = ('an NVIDIA driver but no CUDA toolkit (nvcc): runs use the CPU',
           runtime_module().NO_NVCC_FIX + ', then rerun the set-up')
NO_CUDNN = ('no cuDNN that Jittor finds: GPU convolutions run on Jittor\'s own, much slower kernels',
            runtime_module().NO_CUDNN_FIX)


def findings(driver=None, nvcc=False, cuda=None, gcc=False, prefix=None, jittor_dir=None):
    """[(problem, fix)] of what Jittor will load here; each fact may be given (tests), else asked.
    Changes nothing."""
    driver = driver_present() if driver is None else driver
    if not driver or WINDOWS:
        return []
    nvcc = find_nvcc() if nvcc is False else nvcc
    if nvcc is None:
        return [NO_NVCC]
    if nvcc == 'jtcuda':
        return []
    out = []
    cuda = cuda or nvcc_version(nvcc)
    rt = runtime_module()
    problem = rt.gcc_problem(cuda, rt.gcc_major() if gcc is False else gcc)
    if problem:
        out.append(problem)
    if not runtime_module().jittor_finds_cudnn(nvcc, prefix, jittor_dir) and not pip_cudnn():
        out.append(NO_CUDNN)
    return out


def check(tag='jittor_cuda_patch:'):
    """``--check``: each finding as one line; exit 2 when the set-up cannot build for the GPU (g++)."""
    try:
        found = findings()
    except PatchError as e:
        print(f'error: {tag} {e}', file=sys.stderr)
        return 2
    for problem, fix in found:
        print(f'{"warning" if (problem, fix) in (NO_NVCC, NO_CUDNN) else "error"}: {tag} {problem}; fix: {fix}',
              file=sys.stderr)
    if not found:
        print(tag, 'CUDA: nothing in the way (or no NVIDIA driver: a CPU set-up)')
    return 2 if any(f not in (NO_NVCC, NO_CUDNN) for f in found) else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--jittor-dir', help='the installed jittor package (default: the one this python imports)')
    ap.add_argument('--check', action='store_true', help='only say what stands in the way of the GPU, with fixes')
    args = ap.parse_args(argv)
    tag = 'jittor_cuda_patch:'
    if args.check:
        return check(tag)
    try:
        # First, before anything else is looked at: importing jittor_sbvsr
        # hides nvcc from Jittor (nvcc_path='') exactly when there is no driver.
        if not driver_present():
            print(tag, f'no CUDA driver ({"nvcuda.dll" if WINDOWS else "libcuda.so.1"}): CPU-only set-up, '
                  'Jittor left as it is')
            return 0
        jittor_dir = args.jittor_dir or installed_jittor_dir()
        nvcc = find_nvcc()
        if nvcc is None:
            print(tag, 'no nvcc (nvcc_path, PATH, /usr/local/cuda/bin): Jittor left as it is; runs use the CPU '
                  f'(fix: {NO_NVCC[1]})')
            return 0
        if nvcc == 'jtcuda':
            driver, archs = gpu_info()
            for problem in problems(JTCUDA, driver, archs):
                print(f'warning: {tag} {problem} (set nvcc_path to that nvcc)', file=sys.stderr)
            print(tag, f'Jittor uses the CUDA {JTCUDA[0]}.{JTCUDA[1]} it downloads itself (jtcuda; on Windows '
                  'unless nvcc_path is set): Jittor left as it is')
            return 0
        cuda, cudnn, pip = nvcc_version(nvcc), cudnn_major(nvcc), pip_cudnn()
        if pip and not runtime_module().jittor_finds_cudnn(nvcc, jittor_dir=jittor_dir):
            print(tag, f"cuDNN from pip ({pip[1]}) linked into {link_pip_cudnn(sys.prefix, pip)} for Jittor")
        else:
            pip = None
        driver, archs = gpu_info()
        found = (f'CUDA {cuda[0]}.{cuda[1]} ({nvcc}), cuDNN {cudnn if cudnn is not None else "not found"}, '
                 f'driver {"CUDA %d.%d" % driver if driver else "version unknown"}, '
                 f'GPU {" ".join(f"sm_{a}" for a in archs) or "unknown"}')
        done = patch_jittor(jittor_dir, cuda, cudnn, pip_cudnn=bool(pip))
    except (PatchError, OSError) as e:
        print(f'error: {tag} {e}', file=sys.stderr)
        return 2
    for problem in problems(cuda, driver, archs):
        print(f'warning: {tag} {problem}', file=sys.stderr)
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
    sys.path.insert(0, ROOT)
    from jittor_sbvsr_launcher import safe_console  # a CJK path on a GBK or ASCII console
    safe_console()
    sys.exit(main())

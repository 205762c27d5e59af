"""Install oneDNN 2.2 inside this Python environment, from PyPI wheels.

The place is ``<sys.prefix>/onednn/<name>`` (jittor_sbvsr.runtime.onednn_dir):
inside the install, so every user and every HOME of it finds oneDNN; Jittor's
compile cache stays per user. The wheels, per platform, are the build of
oneDNN 2.2.0 Jittor 1.3.8.5 itself would download from its own server:
- Linux (and WSL2): onednn-cpu-gomp / onednn-devel-cpu-gomp 2021.2.0, GNU
  OpenMP, Jittor's dnnl_lnx_2.2.0_cpu_gomp; only libdnnl.so.2.2 and the
  headers are kept (the wheel ships six copies of a 50 MB file), the names
  Jittor and the fused ops link against become symlinks to it;
- Windows: onednn-cpu-vcomp / onednn-devel-cpu-vcomp 2021.2.0, MSVC's OpenMP,
  Jittor's dnnl_win_2.2.0_cpu_vcomp: bin/dnnl.dll, lib/dnnl.lib and the
  headers, copied as they are (no symlinks: they need admin rights there).

Jittor 1.3.8.5 looks for oneDNN in the user's cache only (and its
``mkl_include_path``/``mkl_lib_path`` variables crash its set-up when both are
given), so its installed copy is changed to look in ``<sys.prefix>/onednn``
first (``JITTOR_EDIT``; ``pip install --force-reinstall jittor==1.3.8.5``
undoes it, and Jittor then uses the user's cache as before).

Needs no root; run by env/setup.py. Usage: tools/install_onednn.py [--prefix DIR] [--jittor-dir DIR]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
from jittor_cuda_patch import (ALREADY, APPLIED, PatchError, edit_text, installed_jittor_dir,  # noqa: E402
                               runtime_module)

# jittor_sbvsr/runtime.py, read by its path: importing the package would configure Jittor for a run,
# and say that oneDNN is missing while this is installing it.
runtime = runtime_module()

VERSION = '2021.2.0'  # the wheels' version of oneDNN 2.2.0
LIB = 'libdnnl.so.2.2'
LINUX_ALIASES = ('libdnnl.so.2', 'libdnnl.so', 'libmkldnn.so', 'libmkldnn.so.2')
# compile_extern.py's setup_mkl: the folder it searches for a dnnl* folder ('\n': Jittor's CRLF)
JITTOR_EDIT = ('compile_extern.py', '        mkl_path = os.path.join(jit_utils.home(), ".cache", "jittor", "mkl")\n',
               f'        mkl_path = os.path.join(sys.prefix, "onednn")  # {runtime.ONEDNN_EDIT_MARK}\n'
               '        if not os.path.isdir(mkl_path):\n'
               '            mkl_path = os.path.join(jit_utils.home(), ".cache", "jittor", "mkl")\n')


def name(windows):
    return runtime.ONEDNN_NAMES['nt' if windows else 'posix']


def wheels(windows):
    omp = 'vcomp' if windows else 'gomp'
    return [f'onednn-cpu-{omp}=={VERSION}', f'onednn-devel-cpu-{omp}=={VERSION}']


def required(windows):
    """The files whose presence means installed (what Jittor and the fused ops use)."""
    if windows:
        return ['bin/dnnl.dll', 'lib/dnnl.lib', 'include/dnnl.h']
    return ['lib/libmkldnn.so', 'include/dnnl.h']


def kept(member, windows):
    """Where a wheel member goes, relative to the oneDNN folder; None: not kept."""
    if '.data/data/' not in member or member.endswith('/'):
        return None
    rel = member.split('.data/data/', 1)[1]
    if windows:
        if not rel.startswith('Library/'):
            return None
        rel = rel[len('Library/'):]
        return rel if rel.startswith('include/') or rel in ('bin/dnnl.dll', 'lib/dnnl.lib') else None
    return rel if rel.startswith('include/') or rel == 'lib/' + LIB else None


def installed(dst, windows):
    return all(os.path.isfile(os.path.join(dst, *f.split('/'))) for f in required(windows))


def unpack(wheel_files, dst, windows):
    """Put the kept members of ``wheel_files`` in ``dst`` (replaced whole: staged beside its
    folder, which is what Jittor searches, then renamed)."""
    stage = os.path.dirname(dst) + '.partial'
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    for whl in wheel_files:
        with zipfile.ZipFile(whl) as z:
            for member in z.namelist():
                rel = kept(member, windows)
                if rel is None:
                    continue
                out = os.path.join(stage, *rel.split('/'))
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with z.open(member) as src, open(out, 'wb') as f:
                    shutil.copyfileobj(src, f)
    lib = os.path.join(stage, 'lib')
    if not windows and os.path.isfile(os.path.join(lib, LIB)):
        os.chmod(os.path.join(lib, LIB), 0o755)
        for alias in LINUX_ALIASES:
            os.symlink(LIB, os.path.join(lib, alias))
    missing = [f for f in required(windows) if not os.path.isfile(os.path.join(stage, *f.split('/')))]
    if missing:
        shutil.rmtree(stage, ignore_errors=True)
        raise OSError(f'the oneDNN wheels lack {", ".join(missing)}')
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.rename(stage, dst)


def download(specs, into):
    subprocess.check_call([sys.executable, '-m', 'pip', 'download', '-q', '--disable-pip-version-check',
                           '--no-deps', '--only-binary=:all:', '-d', into] + specs)
    return [os.path.join(into, f) for f in sorted(os.listdir(into)) if f.endswith('.whl')]


def install(prefix, windows):
    """Install into ``prefix``; returns (folder, whether it was already there)."""
    dst = runtime.onednn_dir(prefix, name(windows))
    if installed(dst, windows):
        return dst, True
    tmp = tempfile.mkdtemp(prefix='onednn-')
    try:
        unpack(download(wheels(windows), tmp), dst, windows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst, False


def point_jittor(jittor_dir):
    """Make Jittor in ``jittor_dir`` look for oneDNN in ``<sys.prefix>/onednn`` first; returns a status."""
    rel, old, new = JITTOR_EDIT
    path = os.path.join(jittor_dir, rel)
    if not os.path.isfile(path):
        raise PatchError(f'{jittor_dir} is not a Jittor package folder (no {rel})')
    return edit_text(path, old, new)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--prefix', default=sys.prefix, help='the environment (default: this Python\'s, sys.prefix)')
    ap.add_argument('--jittor-dir', help='the installed jittor package (default: the one this python imports)')
    args = ap.parse_args(argv)
    try:
        dst, already = install(os.path.abspath(args.prefix), os.name == 'nt')
        print(f'oneDNN 2.2.0 {"already installed" if already else "installed"} in {dst}')
        status = point_jittor(args.jittor_dir or installed_jittor_dir())
    except (OSError, PatchError, subprocess.CalledProcessError, zipfile.BadZipFile) as e:
        print(f'error: install_onednn: {e}', file=sys.stderr)
        return 1
    if status not in (APPLIED, ALREADY):
        print(f'error: install_onednn: Jittor\'s oneDNN search ({JITTOR_EDIT[0]}) not found '
              '(not Jittor 1.3.8.5?): it would not find oneDNN there', file=sys.stderr)
        return 1
    print(f'Jittor looks for oneDNN there first: {status}')
    return 0


if __name__ == '__main__':
    from jittor_sbvsr_launcher import safe_console  # a CJK path on a GBK or ASCII console
    safe_console()
    sys.exit(main())

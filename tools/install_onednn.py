"""Install oneDNN 2.2 where Jittor 1.3.8.5 looks for it, from PyPI wheels.

The wheels onednn-cpu-gomp / onednn-devel-cpu-gomp 2021.2.0 are oneDNN 2.2.0,
the version Jittor would otherwise download from its own server on import.
Only the library and headers are kept (the wheel ships six copies of a 50 MB
file). Needs no root; run once by env/setup.sh.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jittor_sbvsr.runtime import onednn_dir, onednn_installed  # noqa: E402

WHEELS = ['onednn-cpu-gomp==2021.2.0', 'onednn-devel-cpu-gomp==2021.2.0']
LIB = 'libdnnl.so.2.2'


def main():
    if onednn_installed():
        print(f'oneDNN already installed in {onednn_dir()}')
        return 0
    dst = onednn_dir()
    tmp = tempfile.mkdtemp(prefix='onednn-')
    try:
        subprocess.check_call([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps',
                               '--only-binary=:all:', '-d', tmp] + WHEELS)
        stage = dst + '.partial'
        shutil.rmtree(stage, ignore_errors=True)
        os.makedirs(os.path.join(stage, 'lib'))
        for whl in sorted(os.listdir(tmp)):
            with zipfile.ZipFile(os.path.join(tmp, whl)) as z:
                for name in z.namelist():
                    rel = name.split('/data/', 1)[1] if '/data/' in name else None
                    if rel is None:
                        continue
                    if rel.startswith('include/') or rel == 'lib/' + LIB:
                        out = os.path.join(stage, rel)
                        os.makedirs(os.path.dirname(out), exist_ok=True)
                        with z.open(name) as src, open(out, 'wb') as f:
                            shutil.copyfileobj(src, f)
        lib = os.path.join(stage, 'lib')
        os.chmod(os.path.join(lib, LIB), 0o755)
        for alias in ('libdnnl.so.2', 'libdnnl.so', 'libmkldnn.so', 'libmkldnn.so.2'):
            os.symlink(LIB, os.path.join(lib, alias))
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(stage, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f'oneDNN 2.2.0 installed in {dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""``doctor`` (jittor_sbvsr/cli/doctor.py): faked machines through diagnose(), and one real run here.

The faked facts stand for machines this one is not: no driver, an H100
(sm_90) on CUDA 12 with Jittor unchanged, no oneDNN, Windows with a
Chinese user name. Each checks the problem line and its fix, and the exit
code (0 when the device the run would use works).
"""
import os
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import run_child

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def doctor():
    import jittor_sbvsr  # noqa: F401  (prepare() first)
    from jittor_sbvsr.cli import doctor
    return doctor


def healthy(**changes):
    """The facts of a Linux CPU machine where everything is in place."""
    f = {'os': 'Linux-6.1-x86_64', 'windows': False, 'wsl': False,
         'python': ((3, 11), '3.11.7', '/venv/bin/python'), 'driver': None, 'gpus': [],
         'temp': '/tmp', 'onednn_dir': '/venv/onednn/dnnl_lnx_2.2.0_cpu_gomp', 'onednn_installed': True,
         'onednn_enabled': True, 'isa': 'avx2', 'mpirun': '/usr/bin/mpirun', 'mpi_version': 'mpirun 4.1.4',
         'memory': (8 << 30, 16 << 30), 'ffmpeg': '/venv/ffmpeg', 'device': 'cpu', 'device_error': None,
         'jittor': '1.3.8.5', 'cc': ('g++ 12.2.0', '/usr/bin/g++'), 'cache': '/home/u/.cache/jittor/x',
         'nvcc': None, 'cuda': None, 'cudnn': False, 'max_arch': None, 'cuda_patched': False,
         'fused': {'fused chains': 'on', 'fused tail': 'on'}}
    f.update(changes)
    return f


def test_healthy_cpu_machine(doctor):
    lines, problems, rc = doctor.diagnose(healthy())
    assert rc == 0 and problems == []
    text = '\n'.join(lines)
    for key in ('OS', 'Python', 'Jittor', 'cache', 'CUDA', 'oneDNN', 'fast paths', 'Open MPI', 'ffmpeg',
                'memory', 'device'):
        assert any(ln.startswith(key) for ln in lines), (key, text)
    assert 'ISA avx2' in text and 'cpu: works' in text


def test_no_driver(doctor):
    """An nvcc and a GPU listed, but no driver library loads (a CPU box, or a broken driver)."""
    f = healthy(driver=None, nvcc=None, gpus=[{'name': 'NVIDIA GeForce GTX 1650', 'arch': 75,
                                               'free_mib': 3900, 'total_mib': 4096}])
    lines, problems, rc = doctor.diagnose(f)
    cuda = next(ln for ln in lines if ln.startswith('CUDA'))
    assert 'no NVIDIA driver' in cuda and 'libcuda.so.1' in cuda and 'runs on the CPU' in cuda
    assert rc == 0 and len(problems) == 1 and 'GTX 1650' in problems[0] and 'reinstall' in problems[0]
    assert doctor.diagnose(dict(f, gpus=[]))[1] == []  # a CPU machine: nothing to fix
    windows = doctor.diagnose(healthy(windows=True))[0]
    assert 'nvcuda.dll' in next(ln for ln in windows if ln.startswith('CUDA'))


def test_cuda_12_on_sm_90_unpatched(doctor):
    f = healthy(driver='libcuda.so.1', nvcc='/usr/local/cuda/bin/nvcc', cuda=(12, 4), cudnn=True,
                max_arch=89, cuda_patched=False, device='cuda', fused=None,
                gpus=[{'name': 'NVIDIA H100 80GB HBM3', 'arch': 90, 'free_mib': 80000, 'total_mib': 81559}])
    lines, problems, rc = doctor.diagnose(f)
    assert any('toolkit 12.4' in ln and 'sm_89' in ln and 'unchanged' in ln for ln in lines), lines
    assert len(problems) == 1, problems
    assert 'sm_90' in problems[0] and 'sm_89' in problems[0] and 'tools/jittor_cuda_patch.py' in problems[0]
    # patched: the cap is 90 and nothing is left to say
    _, problems, _ = doctor.diagnose(dict(f, max_arch=90, cuda_patched=True))
    assert problems == []
    # an sm_120 GPU beyond even the patched cap: no change helps, the CPU does
    f['gpus'] = [dict(f['gpus'][0], name='RTX 5090', arch=120)]
    _, problems, _ = doctor.diagnose(dict(f, max_arch=90, cuda_patched=True))
    assert len(problems) == 1 and 'sm_120' in problems[0] and '--device cpu' in problems[0]


@pytest.mark.parametrize('patched, cuda, cap', [
    (False, (12, 4), 89), (False, (13, 0), 89), (False, (11, 7), 86), (False, (10, 2), 75),
    (True, (12, 4), 90), (True, (11, 8), 90), (True, (12, 8), 120), (True, (13, 0), 121), (True, (11, 7), 86),
])
def test_cuda_changes_read_from_jittor(doctor, tmp_path, patched, cuda, cap):
    """Jittor's sm cap for each CUDA, from its compiler.py as installed and as the tool leaves it."""
    from conftest import load_tool
    tool = load_tool('jittor_cuda_patch')
    _, _, old, new = tool.ARCH_EDIT
    (tmp_path / 'compiler.py').write_text('x = 1\r\n' + (new if patched else old).replace('\n', '\r\n'),
                                          encoding='utf-8')
    assert doctor.cuda_changes(str(tmp_path), cuda) == (cap, patched)


def test_cuda_13_unpatched_and_no_cudnn(doctor):
    f = healthy(driver='libcuda.so.1', nvcc='/usr/local/cuda/bin/nvcc', cuda=(13, 0), cudnn=False,
                max_arch=89, device='cuda', device_error='Jittor failed to start: compile error', fused=None,
                gpus=[{'name': 'NVIDIA L4', 'arch': 89, 'free_mib': 22000, 'total_mib': 23034}])
    lines, problems, rc = doctor.diagnose(f)
    assert rc == 1
    assert any('CUDA 13.0' in p and 'jittor_cuda_patch.py' in p for p in problems), problems
    assert any(p.startswith('no cuDNN') for p in problems), problems
    assert any('cuda device does not work' in p for p in problems), problems


def test_no_onednn(doctor):
    f = healthy(onednn_installed=False, onednn_enabled=False, isa=None, fused=None)
    lines, problems, rc = doctor.diagnose(f)
    assert rc == 0  # slower, but it runs
    assert any(ln.startswith('oneDNN') and 'not installed' in ln for ln in lines)
    assert len(problems) == 1 and 'oneDNN is not installed' in problems[0] and 'env/setup.py' in problems[0]
    assert any(ln.startswith('fast paths') and 'not used' in ln for ln in lines)


def test_non_ascii_cache_on_windows(doctor):
    f = healthy(windows=True, os='Windows-10-10.0.19045-SP0',
                cache='C:\\Users\\用户 张三\\.cache\\jittor\\jt1.3.8\\cl\\py3.11.9',
                temp='C:\\Users\\用户 张三\\AppData\\Local\\Temp')
    lines, problems, rc = doctor.diagnose(f)
    assert len(problems) == 2, problems
    assert 'JITTOR_HOME' in problems[0] and '用户 张三' in problems[0]
    assert 'TEMP and TMP' in problems[1]
    # the same path on Linux is fine (tested end to end: tests/test_encoding.py)
    assert doctor.diagnose(dict(f, windows=False))[1] == []
    # Jittor that could not start: the cache folder it would use is still checked
    f = dict(f, jittor=None, cache='C:\\Users\\用户 张三\\.cache\\jittor', device_error='Jittor failed to start: x')
    lines, problems, rc = doctor.diagnose(f)
    assert rc == 1 and any('JITTOR_HOME' in p for p in problems), problems


JTCUDA = 'C:\\Users\\u\\.cache\\jittor\\jtcuda\\cuda11.2_cudnn8_win\\bin\\nvcc.exe'  # what Jittor downloads


@pytest.mark.parametrize('name,arch,says', [
    ('NVIDIA GeForce RTX 4090', 89, None),  # sm_86 machine code runs on sm_89: same major architecture
    ('NVIDIA GeForce RTX 3060', 86, None),
    ('NVIDIA GeForce GTX 1650', 75, None),
    ('NVIDIA H100 PCIe', 90, 'CUDA 11.8 or newer'),
    ('NVIDIA GeForce RTX 5090', 120, 'CUDA 12.8 or newer'),
])
def test_gpu_against_jittors_own_cuda_on_windows(doctor, name, arch, says):
    """On Windows Jittor builds with the CUDA 11.2 it downloads (sm_86 at most, machine code only)."""
    f = healthy(windows=True, os='Windows-10-10.0.19045-SP0', driver='nvcuda.dll', nvcc=JTCUDA, cuda=(11, 2),
                cudnn=True, max_arch=86, device='cuda', fused=None, codepage='cp936', vc_missing=[],
                cache='C:\\jittor\\x', temp='C:\\Temp',
                gpus=[{'name': name, 'arch': arch, 'free_mib': 7000, 'total_mib': 8192}])
    _, problems, rc = doctor.diagnose(f)
    assert rc == 0
    if says is None:
        assert problems == []
    else:
        [p] = problems
        assert f'is sm_{arch}, but Jittor\'s own CUDA 11.2 builds Jittor\'s kernels for sm_86 at most' in p
        assert says in p and 'nvcc_path' in p and '--device cpu' in p


def test_the_vc_redistributable_on_windows(doctor):
    f = healthy(windows=True, codepage='cp1252', vc_missing=['msvcp140.dll', 'vcomp140.dll'], cache='C:\\jittor',
                temp='C:\\Temp', onednn_enabled=False, fused=None)
    _, problems, _ = doctor.diagnose(f)
    [p] = problems
    assert 'redistributable is missing (msvcp140.dll, vcomp140.dll not found)' in p
    assert p.endswith('fix: winget install --id Microsoft.VCRedist.2015+.x64 -e')


@pytest.mark.parametrize('codepage,says', [
    ('cp936', "Windows' code page is cp936, not UTF-8"),  # a Chinese Windows: 张三 can be written in GBK
    ('cp1252', "cannot be written in Windows' code page (cp1252)"),  # a Western one: it cannot
    ('cp65001', None), ('utf-8', None),  # "Use Unicode UTF-8 for worldwide language support"
])
def test_cache_folder_and_code_page_on_windows(doctor, codepage, says):
    f = healthy(windows=True, codepage=codepage, vc_missing=[], cache='C:\\Users\\张三\\.cache\\jittor\\x',
                temp='C:\\Temp')
    lines, problems, _ = doctor.diagnose(f)
    assert f'(code page {codepage})' in next(ln for ln in lines if ln.startswith('cache'))
    if says is None:
        assert problems == []
    else:
        [p] = problems
        assert p.startswith("Jittor's cache C:\\Users\\张三\\.cache\\jittor\\x is not ASCII")
        assert says in p and 'JITTOR_HOME' in p


def test_failed_self_check_and_little_memory(doctor):
    f = healthy(fused={'fused chains': 'failed its self-check: differs from Jittor\'s ops by 1.0e-02',
                       'fused tail': 'on'}, memory=(1 << 30, 4 << 30))
    _, problems, rc = doctor.diagnose(f)
    assert rc == 0 and len(problems) == 2
    assert 'falls back to the plain path' in problems[0] and '--tile' in problems[1]


def test_real_run_here():
    """The doctor on this machine, as a user runs it: one screen, exit 0 (the CPU works here)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = run_child([sys.executable, '-m', 'jittor_sbvsr.cli.doctor'], cwd=str(ROOT), env=env, capture_output=True,
                  text=True, encoding='utf-8', timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    out = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith('Compiling')]
    assert out[-1].startswith('ok: runs on '), r.stdout
    assert len(out) <= 25, r.stdout  # one screen
    device = next(ln for ln in out if ln.startswith('device'))
    assert 'works' in device, r.stdout
    if 'cpu' in device:  # this machine has oneDNN (the set-up installs it): the fast paths were checked
        assert any(ln.startswith('fast paths') and 'fused chains: on' in ln for ln in out), r.stdout


def test_sbvsr_doctor_command():
    scripts = tomllib.loads((ROOT / 'pyproject.toml').read_text(encoding='utf-8'))['project']['scripts']
    assert scripts['sbvsr-doctor'] == 'jittor_sbvsr_launcher:doctor'
    r = run_child([sys.executable, '-c', 'import sys, jittor_sbvsr_launcher as l; sys.exit(l.doctor(["--help"]))'],
                  cwd=str(ROOT), capture_output=True, text=True, encoding='utf-8', timeout=300)
    assert r.returncode == 0 and r.stdout.startswith('usage: sbvsr-doctor'), r.stdout + r.stderr


GPU = dict(driver='libcuda.so.1', nvcc='/usr/local/cuda/bin/nvcc', cuda=(12, 4), cudnn=True, max_arch=90,
           cuda_patched=True, device='cuda', fused=None, gcc=12,
           gpus=[{'name': 'NVIDIA A100-SXM4-80GB', 'arch': 80, 'free_mib': 80000, 'total_mib': 81920}])


@pytest.mark.parametrize('changes,says,fix', [
    ({'cudnn': False}, "no cuDNN that Jittor finds: GPU convolutions run on Jittor's own", 'nvidia-cudnn-cu12'),
    ({'cudnn': False, 'pip_cudnn': '/venv/lib/python3.11/site-packages/nvidia/cudnn', 'cudnn_visible': False},
     'cuDNN is installed by pip', 'rerun the set-up'),
    ({'gcc': 13}, 'g++ 13, nvcc of CUDA 12.4 accepts g++ up to 13', None),
    ({'gcc': 14}, 'g++ 14, nvcc of CUDA 12.4 accepts g++ up to 13', 'cc_path=g++-13'),
    ({'mpi_share': 2, 'gpu_placement': 'local rank 1 of 2, GPU 0 (set by jittor-sbvsr), shared by 2 ranks'},
     '2 MPI ranks share each GPU', 'mpirun -np N'),
    ({'nvcc': None, 'cuda': None, 'cudnn': False, 'no_toolkit': True, 'device': 'cpu'},
     'an NVIDIA driver but no nvcc', 'install a CUDA toolkit 11.8 to 13'),
])
def test_gpu_problems_each_with_its_fix(doctor, changes, says, fix):
    """No cuDNN, pip's cuDNN not linked in, g++ too new, ranks sharing a GPU, a driver without nvcc."""
    lines, problems, rc = doctor.diagnose(healthy(**dict(GPU, **changes)))
    assert rc == 0
    if fix is None:  # g++ 13 is what CUDA 12.4 accepts
        assert problems == [], problems
        return
    assert len(problems) == 1 and says in problems[0] and 'fix: ' in problems[0] and fix in problems[0], problems
    if 'no_toolkit' in changes:
        cuda = next(ln for ln in lines if ln.startswith('CUDA'))
        assert 'runs on the CPU' in cuda and 'would download its own CUDA 11.2' in cuda
    if 'mpi_share' in changes:
        assert any(ln.startswith('MPI rank') and 'GPU 0' in ln for ln in lines)
    # the commands' one parser (cli/parser.py): a bad flag is one error line and exit 2, before any check runs
    r = run_child([sys.executable, '-c', 'import sys, jittor_sbvsr_launcher as l; sys.exit(l.doctor(["--gpu"]))'],
                  cwd=str(ROOT), capture_output=True, text=True, encoding='utf-8', timeout=300)
    assert (r.returncode, r.stdout, r.stderr.strip()) == (2, '', 'error: unrecognized arguments: --gpu'), r.stderr

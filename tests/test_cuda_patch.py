"""tools/jittor_cuda_patch.py, run by env/setup.py, on a copy of the installed Jittor's files.

The installed Jittor is only read (its files are copied into tmp_path, in
the package's layout); nvcc and cuDNN are faked by a shell script and a
header, the driver (present or not, its CUDA version, the GPUs'
architectures) by monkeypatching. CUDA 11, 12 and 13 are each run through
the tool's command; the patched ``max_arch`` code is executed as Jittor runs it.
"""
import ast
import hashlib
import re
import importlib.util
import os
import shutil
import sys
import textwrap

import pytest

from conftest import ROOT, load_tool, run_child

COPIED = ['compiler.py', 'compile_extern.py', 'extern/cuda/inc/helper_cuda.h', 'extern/cuda/cudnn']
ALL_CHANGES = 6
ARCH_LINE = ('    max_arch = 121 if nvcc_version >= [12, 9] else 120 if nvcc_version >= [12, 8] '
             'else 90 if nvcc_version >= [11, 8] else 89  # jittor-sbvsr: sm_90+')


tool = load_tool('jittor_cuda_patch')


@pytest.fixture(scope='module')
def installed_jittor():
    spec = importlib.util.find_spec('jittor')  # finds it without importing it
    assert spec is not None and spec.submodule_search_locations, 'jittor is not installed'
    return list(spec.submodule_search_locations)[0]


@pytest.fixture
def jt_copy(installed_jittor, tmp_path):
    dst = tmp_path / 'site' / 'jittor'
    for rel in COPIED:
        src = os.path.join(installed_jittor, *rel.split('/'))
        out = dst.joinpath(*rel.split('/'))
        out.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, out)
        else:
            shutil.copy2(src, out)
    _undo_patch(dst)
    pyc = dst / '__pycache__' / 'compiler.cpython-311.pyc'
    pyc.parent.mkdir()
    pyc.write_bytes(b'stale')
    return dst


# what the cuDNN 9 change removes (Jittor 1.3.8.5's cuDNN RNN files), under extern/cuda/cudnn
RNN_FILES = ['inc/cudnn_rnn_descriptor.h', 'ops/cudnn_rnn_backward_x_op.cc', 'ops/cudnn_rnn_backward_x_op.h',
             'ops/cudnn_rnn_op.cc', 'ops/cudnn_rnn_op.h', 'src/cudnn_rnn_descriptor.cc']


def _undo_patch(jt):
    """A copy as pip installs Jittor, where env/setup.py had patched the installed one (on a GPU
    machine): each edit reversed, the RNN files the cuDNN 9 change removed put back (as stand-ins)."""
    for _, rel, old, new in [tool.ARCH_EDIT, *tool.CUDA13_EDITS, tool.CUDNN9_EDIT, *tool.CUDNN_PIP_EDITS]:
        path = jt / rel
        text = path.read_bytes().decode('utf-8')
        nl = '\r\n' if '\r\n' in text else '\n'
        path.write_bytes(text.replace(new.replace('\n', nl), old.replace('\n', nl)).encode('utf-8'))
    cudnn = jt / 'extern' / 'cuda' / 'cudnn'
    if not list(cudnn.rglob('cudnn_rnn*')):
        for rel in RNN_FILES:
            (cudnn / rel).write_bytes(b'// stand-in for a file of Jittor the cuDNN 9 change removes\n')


def test_a_patched_install_is_tested_from_the_text_pip_installs(jt_copy, tmp_path):
    """The fixture's undo: a patched copy, undone, is the copy again (the RNN files as stand-ins)."""
    pristine = _hashes(jt_copy)
    patched = tmp_path / 'patched'
    shutil.copytree(jt_copy, patched)
    assert len(tool.patch_jittor(str(patched), (13, 0), 9)) == ALL_CHANGES
    assert _hashes(patched) != pristine
    _undo_patch(patched)
    undone = _hashes(patched)
    rnn = {p for p in pristine if 'cudnn_rnn' in p}
    assert sorted(rnn) == sorted(os.path.join('extern', 'cuda', 'cudnn', *r.split('/')) for r in RNN_FILES)
    assert set(undone) == set(pristine) - {os.path.join('__pycache__', 'compiler.cpython-311.pyc')}
    assert {p: h for p, h in undone.items() if p not in rnn} == {
        p: h for p, h in pristine.items() if p not in rnn and p in undone}


def _hashes(tree):
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob('*')) if p.is_file()}


def _fake_cuda(tmp_path, release, cudnn):
    """A CUDA folder with an nvcc that prints `release`'s version, and cuDNN's version header."""
    if sys.platform == 'win32':
        pytest.skip('POSIX only: the stand-in nvcc is a shell script')
    home = tmp_path / f'cuda-{release}'
    (home / 'bin').mkdir(parents=True)
    (home / 'include').mkdir()
    nvcc = home / 'bin' / 'nvcc'
    nvcc.write_text('#!/bin/sh\necho "nvcc: NVIDIA (R) Cuda compiler driver"\n'
                    f'echo "Cuda compilation tools, release {release}, V{release}.88"\n', encoding='utf-8')
    nvcc.chmod(0o755)
    if cudnn is not None:
        (home / 'include' / 'cudnn_version.h').write_text(
            f'#define CUDNN_MAJOR {cudnn}\n#define CUDNN_MINOR 1\n', encoding='utf-8')
    return str(nvcc)


def _main(monkeypatch, jt, driver, nvcc, driver_version=(13, 0), archs=(90,)):
    from jittor_sbvsr import runtime
    monkeypatch.setattr(runtime, 'cuda_driver_present', lambda: driver)
    monkeypatch.setattr(tool, 'gpu_info', lambda: (driver_version, list(archs)))
    monkeypatch.setenv('nvcc_path', nvcc)
    return tool.main(['--jittor-dir', str(jt)])


def test_cuda13_cudnn9_applies_every_change_once(jt_copy):
    before = _hashes(jt_copy)
    done = tool.patch_jittor(str(jt_copy), (13, 0), 9)
    assert len(done) == ALL_CHANGES and all(st == tool.APPLIED for _, st in done), done
    helper = (jt_copy / 'extern/cuda/inc/helper_cuda.h').read_bytes()
    compiler = (jt_copy / 'compiler.py').read_bytes()
    extern = (jt_copy / 'compile_extern.py').read_bytes()
    assert b'deviceProp.computeMode' not in helper and b'deviceProp.clockRate' not in helper
    assert (ARCH_LINE + '\r\n').encode() in compiler and b'    max_arch = 89\r' not in compiler
    assert compiler.count(b'nvcc_flags.replace("-std=c++14", "-std=c++17")') == 1
    assert b'libs = ["libcudnn_ops.so", "libcudnn_cnn.so"]' in extern and b'libcudnn_ops_infer' not in extern
    for text in (helper, compiler, extern):  # Jittor's CRLF kept: no bare LF
        assert text.count(b'\n') == text.count(b'\r\n')
    ast.parse(compiler)
    ast.parse(extern)
    assert not list(jt_copy.rglob('cudnn_rnn*'))
    assert list((jt_copy / 'extern/cuda/cudnn/ops').glob('cudnn_conv_op.*'))
    assert not (jt_copy / '__pycache__' / 'compiler.cpython-311.pyc').exists()
    after = _hashes(jt_copy)
    assert set(after) < set(before)

    again = tool.patch_jittor(str(jt_copy), (13, 0), 9)
    assert [c for c, _ in again] == [c for c, _ in done]
    assert all(st == tool.ALREADY for _, st in again), again
    assert _hashes(jt_copy) == after


@pytest.mark.parametrize('cuda,cudnn', [((11, 7), 8), ((11, 2), None), ((11, 0), 8)])
def test_cuda_before_11_8_with_cudnn_8_changes_nothing(jt_copy, cuda, cudnn):
    before = _hashes(jt_copy)
    assert tool.patch_jittor(str(jt_copy), cuda, cudnn) == []
    assert _hashes(jt_copy) == before


ARCH = tool.ARCH_EDIT[0]
CUDNN9 = [tool.CUDNN9_EDIT[0], tool.RNN_CHANGE]
CUDA13 = [name for name, *_ in tool.CUDA13_EDITS]


@pytest.mark.parametrize('cuda,cudnn,changes', [
    ((11, 8), 8, [ARCH]),
    ((12, 4), 8, [ARCH]),
    ((12, 4), None, [ARCH]),
    ((12, 8), 9, [ARCH] + CUDNN9),
    ((13, 0), 9, [ARCH] + CUDA13 + CUDNN9),
])
def test_each_cuda_gets_its_changes(jt_copy, cuda, cudnn, changes):
    done = tool.patch_jittor(str(jt_copy), cuda, cudnn)
    assert done == [(c, tool.APPLIED) for c in changes]
    helper = (jt_copy / 'extern/cuda/inc/helper_cuda.h').read_bytes()
    assert (b'deviceProp.clockRate' in helper) == (cuda < (13,))
    assert (b'libcudnn_ops_infer' in (jt_copy / 'compile_extern.py').read_bytes()) == (cudnn != 9)


def _jittor_arch_cap(compiler_py, nvcc_version):
    """Run compiler.py's max_arch lines (``max_arch =`` up to their use) as Jittor does."""
    text = compiler_py.read_text(encoding='utf-8')
    block = re.search(r'\n(    max_arch = .*?\n)    if len\(flags\.cuda_archs\)', text, re.S).group(1)
    scope = {'nvcc_version': list(nvcc_version)}
    exec(textwrap.dedent(block), scope)
    return scope['max_arch']


@pytest.mark.parametrize('nvcc,cap', [((10, 2, 89), 75), ((11, 0, 3), 80), ((11, 4, 48), 86), ((11, 8, 89), 90),
                                      ((12, 4, 131), 90), ((12, 8, 61), 120), ((12, 9, 41), 121),
                                      ((13, 0, 88), 121)])
def test_patched_cap_is_what_nvcc_builds(jt_copy, nvcc, cap):
    assert _jittor_arch_cap(jt_copy / 'compiler.py', nvcc) == (89 if nvcc >= (11, 8) else cap)  # as shipped
    tool.patch_jittor(str(jt_copy), nvcc[:2], 8)
    assert _jittor_arch_cap(jt_copy / 'compiler.py', nvcc) == cap
    for arch in (75, 86, 89, 90, 100, 120, 121):
        assert tool.built_arch(nvcc[:2], arch) == min(arch, cap)


def test_missing_pattern_is_a_warning_not_applied(jt_copy, tmp_path, monkeypatch, capsys):
    compiler = jt_copy / 'compiler.py'
    compiler.write_bytes(compiler.read_bytes().replace(b'    max_arch = 89', b'    max_arch = 87'))
    done = dict(tool.patch_jittor(str(jt_copy), (13, 0), 9))
    assert done.pop(ARCH) == tool.MISSING
    assert set(done.values()) == {tool.APPLIED}
    assert b'    max_arch = 87' in compiler.read_bytes()

    assert _main(monkeypatch, jt_copy, True, _fake_cuda(tmp_path, '13.0', 9)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('warning:') and 'max_arch' in err[0], err
    assert 'pattern not found' in err[0] and 'not Jittor 1.3.8.5?' in err[0]


def test_main_without_driver_touches_nothing(jt_copy, tmp_path, monkeypatch, capsys):
    before = _hashes(jt_copy)
    assert _main(monkeypatch, jt_copy, False, _fake_cuda(tmp_path, '13.0', 9)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and 'no CUDA driver' in out[0], out
    assert _hashes(jt_copy) == before


def test_main_without_nvcc_touches_nothing(jt_copy, monkeypatch, capsys):
    before = _hashes(jt_copy)
    assert _main(monkeypatch, jt_copy, True, '') == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and 'no nvcc' in out[0], out
    assert _hashes(jt_copy) == before


def test_main_detects_cuda13_and_cudnn9(jt_copy, tmp_path, monkeypatch, capsys):
    nvcc = _fake_cuda(tmp_path, '13.0', 9)
    assert _main(monkeypatch, jt_copy, True, nvcc) == 0
    out, err = capsys.readouterr()
    out = out.strip().splitlines()
    assert len(out) == ALL_CHANGES and all(line.endswith(': applied') for line in out), out
    assert all('CUDA 13.0' in line and 'cuDNN 9, driver CUDA 13.0, GPU sm_90' in line for line in out)
    assert err == ''
    patched = _hashes(jt_copy)
    assert _main(monkeypatch, jt_copy, True, nvcc) == 0
    assert all(line.endswith(': already applied') for line in capsys.readouterr().out.splitlines())
    assert _hashes(jt_copy) == patched


@pytest.mark.parametrize('release,cudnn,driver,archs,applied,warning', [
    ('11.8', 8, (11, 8), [90], [ARCH], None),
    ('11.4', 8, (12, 2), [80, 86], [], None),
    ('11.4', 8, (12, 2), [90], [], 'sm_90, CUDA 11.4 builds up to sm_86, which it cannot run: use CUDA 11.8'),
    ('12.4', 8, (12, 4), [90], [ARCH], None),
    ('12.4', 9, (12, 2), [89, 90], [ARCH] + CUDNN9, None),  # a 12.2 driver runs 12.4 code (same major)
    ('12.4', 8, (12, 4), [100], [ARCH], 'sm_100, CUDA 12.4 builds up to sm_90, which it cannot run: use CUDA 12.8'),
    ('12.8', 9, (12, 8), [100, 120], [ARCH] + CUDNN9, None),
    ('13.0', 9, (12, 4), [90], [ARCH] + CUDA13 + CUDNN9, 'the driver supports CUDA 12.4 only, nvcc is CUDA 13.0'),
    ('13.0', 9, (13, 0), [70], [ARCH] + CUDA13 + CUDNN9, 'sm_70, which CUDA 13.0 no longer builds for: use CUDA 12'),
])
def test_main_per_cuda_version(jt_copy, tmp_path, monkeypatch, capsys, release, cudnn, driver, archs,
                               applied, warning):
    """CUDA 11, 12 and 13 through the command: a stub nvcc, cuDNN header, driver version and GPUs."""
    before = _hashes(jt_copy)
    assert _main(monkeypatch, jt_copy, True, _fake_cuda(tmp_path, release, cudnn), driver, archs) == 0
    out, err = capsys.readouterr()
    if applied:
        assert [line.rsplit(': ', 2)[1:] for line in out.splitlines()] == [[c, 'applied'] for c in applied]
        assert _hashes(jt_copy) != before
    else:
        assert len(out.splitlines()) == 1 and 'needs no change' in out
        assert _hashes(jt_copy) == before
    assert all(f'CUDA {release} ' in line and f'cuDNN {cudnn}' in line for line in out.splitlines())
    if warning:
        assert err.startswith('warning: jittor_cuda_patch: ') and warning in err and len(err.splitlines()) == 1, err
    else:
        assert err == ''


@pytest.mark.parametrize('archs,warning', [([86, 89], None), ([120], 'sm_120, CUDA 11.2 builds up to sm_86')])
def test_windows_uses_jittors_own_cuda_11_2(jt_copy, monkeypatch, capsys, archs, warning):
    """Jittor 1.3.8.5 on Windows downloads CUDA 11.2 itself: nothing to change, but a GPU it cannot use is said."""
    monkeypatch.setattr(tool, 'WINDOWS', True)
    monkeypatch.delenv('nvcc_path', raising=False)
    monkeypatch.setattr(tool, 'gpu_info', lambda: ((12, 8), archs))
    from jittor_sbvsr import runtime
    monkeypatch.setattr(runtime, 'cuda_driver_present', lambda: True)
    before = _hashes(jt_copy)
    assert tool.main(['--jittor-dir', str(jt_copy)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith('jittor_cuda_patch: Jittor uses the CUDA 11.2 it downloads itself')
    assert len(out.splitlines()) == 1
    assert (warning in err and 'set nvcc_path' in err) if warning else err == '', err
    assert _hashes(jt_copy) == before


def test_errors_are_one_line(tmp_path, monkeypatch, capsys):
    assert _main(monkeypatch, tmp_path / 'nowhere', True, _fake_cuda(tmp_path, '13.0', 9)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error:') and 'not a Jittor package' in err[0]
    assert _main(monkeypatch, tmp_path, True, str(tmp_path / 'no-nvcc')) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'not an executable' in err[0]
    with pytest.raises(tool.PatchError):
        tool.parse_cuda_version('command not found')


def test_nvcc_version_parsing():
    text = ('nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2025 NVIDIA Corporation\n'
            'Cuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0\n')
    assert tool.parse_cuda_version(text) == (13, 0)


def test_runtime_import_does_not_import_jittor():
    code = "import sys, jittor_sbvsr.runtime; sys.exit(1 if 'jittor' in sys.modules else 0)"
    r = run_child([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                  encoding='utf-8')
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------- what Jittor will load, faked ----

def _toolkit_cudnn(nvcc):
    """cuDNN where Jittor 1.3.8.5 looks for this nvcc: the toolkit's include/ and lib64/."""
    home = os.path.dirname(os.path.dirname(nvcc))
    open(os.path.join(home, 'include', 'cudnn.h'), 'w', encoding='utf-8').close()
    os.makedirs(os.path.join(home, 'lib64'), exist_ok=True)
    open(os.path.join(home, 'lib64', 'libcudnn.so'), 'w', encoding='utf-8').close()


def test_findings_name_each_problem_with_its_fix(jt_copy, tmp_path, monkeypatch):
    """A driver without nvcc, a g++ newer than nvcc accepts, no cuDNN Jittor finds."""
    if os.path.isfile('/usr/include/cudnn.h'):
        pytest.skip('this machine has cuDNN in /usr/include')
    monkeypatch.setattr(tool, 'pip_cudnn', lambda site_dirs=None: None)
    assert tool.findings(driver=False) == []
    assert tool.findings(driver=True, nvcc=None) == [tool.NO_NVCC]
    assert 'nvcc_path' in tool.NO_NVCC[1]
    nvcc = _fake_cuda(tmp_path, '12.2', 9)
    found = tool.findings(driver=True, nvcc=nvcc, gcc=13, jittor_dir=str(jt_copy))
    assert len(found) == 2 and found[1] == tool.NO_CUDNN, found
    problem, fix = found[0]
    assert 'g++ 13' in problem and 'CUDA 12.2 accepts g++ up to 12' in problem
    assert 'cc_path=g++-12' in fix
    assert 'nvidia-cudnn-cu12' in tool.NO_CUDNN[1]
    _toolkit_cudnn(nvcc)
    assert tool.findings(driver=True, nvcc=nvcc, gcc=12, jittor_dir=str(jt_copy)) == []
    assert tool.findings(driver=True, nvcc=_fake_cuda(tmp_path, '13.0', 9), gcc=14,
                         jittor_dir=str(jt_copy))[:1] != [tool.NO_NVCC]


@pytest.mark.parametrize('cuda,gcc,top', [((11, 8), 12, 11), ((12, 3), 13, 12), ((12, 4), 14, 13),
                                          ((12, 8), 14, None), ((13, 0), 15, None), ((11, 2), 10, None)])
def test_host_compiler_range(cuda, gcc, top):
    from jittor_sbvsr import runtime
    found = runtime.gcc_problem(cuda, gcc)
    assert (found is None) == (top is None)
    if top:
        assert f'up to {top}' in found[0] and f'cc_path=g++-{top}' in found[1]


def test_check_stops_the_set_up_only_where_it_cannot_build(monkeypatch, capsys):
    gcc = ('the host compiler is g++ 13, nvcc of CUDA 12.2 accepts g++ up to 12', 'set cc_path=g++-12')
    monkeypatch.setattr(tool, 'findings', lambda: [gcc, tool.NO_CUDNN])
    assert tool.main(['--check']) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith('error: ') and 'fix: set cc_path=g++-12' in err[0]
    assert err[1].startswith('warning: ') and 'fix: pip install nvidia-cudnn-cu12' in err[1]
    monkeypatch.setattr(tool, 'findings', lambda: [tool.NO_NVCC])
    assert tool.main(['--check']) == 0
    assert 'runs use the CPU' in capsys.readouterr().err


def _pip_cudnn_site(tmp_path):
    site = tmp_path / 'site-packages'
    inc, lib = site / 'nvidia' / 'cudnn' / 'include', site / 'nvidia' / 'cudnn' / 'lib'
    inc.mkdir(parents=True)
    lib.mkdir()
    for name in ('cudnn.h', 'cudnn_version.h'):
        (inc / name).write_text('#define CUDNN_MAJOR 9\n', encoding='utf-8')
    for name in ('libcudnn.so.9', 'libcudnn_ops.so.9', 'libcudnn_cnn.so.9'):
        (lib / name).write_text('', encoding='utf-8')
    return site


def _search_file(compile_extern, prefix):
    """compile_extern.py's search_file, run as Jittor runs it, with ``sys.prefix`` = ``prefix``."""
    text = compile_extern.read_text(encoding='utf-8').replace('\r\n', '\n')
    src = text[text.index('def search_file('):text.index('def install_mkl(')]
    scope = {'os': os, 'glob': __import__('glob'), 'sys': type('S', (), {'prefix': str(prefix)}),
             'LOG': type('L', (), {'v': staticmethod(print), 'f': staticmethod(lambda m: None)})}
    exec(src, scope)
    return scope['search_file']


def test_pip_cudnn_is_linked_into_the_install_and_found_by_jittor(jt_copy, tmp_path, monkeypatch, capsys):
    site = _pip_cudnn_site(tmp_path)
    found = tool.pip_cudnn([str(site)])
    assert found == (str(site / 'nvidia' / 'cudnn' / 'include'), str(site / 'nvidia' / 'cudnn' / 'lib'))
    venv = tmp_path / 'venv'
    search = _search_file(jt_copy / 'compile_extern.py', venv)
    assert search([str(tmp_path)], 'libcudnn.so') is None  # as shipped: never in the install
    monkeypatch.setattr(tool, 'pip_cudnn', lambda site_dirs=None: found)
    monkeypatch.setattr(sys, 'prefix', str(venv))
    assert _main(monkeypatch, jt_copy, True, _fake_cuda(tmp_path, '12.4', 9)) == 0
    out = capsys.readouterr().out
    assert f"cuDNN from pip ({found[1]}) linked into {venv / 'cudnn'}" in out
    for name, *_ in tool.CUDNN_PIP_EDITS:
        assert f'{name}: applied' in out
    home = venv / 'cudnn'
    assert os.path.realpath(home / 'lib' / 'libcudnn.so') == str(site / 'nvidia' / 'cudnn' / 'lib' / 'libcudnn.so.9')
    assert (home / 'lib' / 'libcudnn_ops.so').exists() and (home / 'include' / 'cudnn.h').exists()
    extern = (jt_copy / 'compile_extern.py').read_bytes()
    ast.parse(extern)
    assert extern.count(b'\n') == extern.count(b'\r\n')
    search = _search_file(jt_copy / 'compile_extern.py', venv)
    assert search(['/nowhere'], 'libcudnn.so') == str(home / 'lib' / 'libcudnn.so')
    assert search(['/nowhere'], 'cudnn.h') == str(home / 'include' / 'cudnn.h')

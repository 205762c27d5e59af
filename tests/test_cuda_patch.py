"""tools/jittor_cuda_patch.py, run by env/setup.sh, on a copy of the installed Jittor's files.

The installed Jittor is only read (its files are copied into tmp_path, in
the package's layout); nvcc and cuDNN are faked by a shell script and a
header, the driver by monkeypatching jittor_sbvsr.runtime.
"""
import ast
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, load_tool

COPIED = ['compiler.py', 'extern/cuda/inc/helper_cuda.h', 'extern/cuda/cudnn']
ALL_CHANGES = 5


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
    pyc = dst / '__pycache__' / 'compiler.cpython-311.pyc'
    pyc.parent.mkdir()
    pyc.write_bytes(b'stale')
    return dst


def _hashes(tree):
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob('*')) if p.is_file()}


def _fake_cuda(tmp_path, release, cudnn):
    """A CUDA folder with an nvcc that prints `release`'s version, and cuDNN's version header."""
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


def _main(monkeypatch, jt, driver, nvcc):
    from jittor_sbvsr import runtime
    monkeypatch.setattr(runtime, 'cuda_driver_present', lambda: driver)
    monkeypatch.setenv('nvcc_path', nvcc)
    return tool.main(['--jittor-dir', str(jt)])


def test_cuda13_cudnn9_applies_every_change_once(jt_copy):
    before = _hashes(jt_copy)
    done = tool.patch_jittor(str(jt_copy), (13, 0), 9)
    assert len(done) == ALL_CHANGES and all(st == tool.APPLIED for _, st in done), done
    helper = (jt_copy / 'extern/cuda/inc/helper_cuda.h').read_bytes()
    compiler = (jt_copy / 'compiler.py').read_bytes()
    assert b'deviceProp.computeMode' not in helper and b'deviceProp.clockRate' not in helper
    assert b'    max_arch = 90' in compiler and b'    max_arch = 89' not in compiler
    assert compiler.count(b'nvcc_flags.replace("-std=c++14", "-std=c++17")') == 1
    for text in (helper, compiler):  # Jittor's CRLF kept: no bare LF
        assert text.count(b'\n') == text.count(b'\r\n')
    ast.parse(compiler)
    assert not list(jt_copy.rglob('cudnn_rnn*'))
    assert list((jt_copy / 'extern/cuda/cudnn/ops').glob('cudnn_conv_op.*'))
    assert not (jt_copy / '__pycache__' / 'compiler.cpython-311.pyc').exists()
    after = _hashes(jt_copy)
    assert set(after) < set(before)

    again = tool.patch_jittor(str(jt_copy), (13, 0), 9)
    assert [c for c, _ in again] == [c for c, _ in done]
    assert all(st == tool.ALREADY for _, st in again), again
    assert _hashes(jt_copy) == after


@pytest.mark.parametrize('cuda,cudnn', [((12, 4), 8), ((11, 8), 8), ((12, 1), None), ((11, 2), None)])
def test_cuda_11_12_with_cudnn_8_changes_nothing(jt_copy, cuda, cudnn):
    before = _hashes(jt_copy)
    assert tool.patch_jittor(str(jt_copy), cuda, cudnn) == []
    assert _hashes(jt_copy) == before


def test_cudnn9_on_cuda12_removes_only_the_rnn_ops(jt_copy):
    assert tool.patch_jittor(str(jt_copy), (12, 8), 9) == [(tool.RNN_CHANGE, tool.APPLIED)]
    assert b'    max_arch = 89' in (jt_copy / 'compiler.py').read_bytes()


def test_missing_pattern_is_a_warning_not_applied(jt_copy, tmp_path, monkeypatch, capsys):
    compiler = jt_copy / 'compiler.py'
    compiler.write_bytes(compiler.read_bytes().replace(b'    max_arch = 89', b'    max_arch = 87'))
    done = dict(tool.patch_jittor(str(jt_copy), (13, 0), 9))
    assert done.pop('max_arch 89 -> 90 (sm_90)') == tool.MISSING
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
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == ALL_CHANGES and all(line.endswith(': applied') for line in out), out
    assert all('CUDA 13.0' in line and 'cuDNN 9' in line for line in out)
    patched = _hashes(jt_copy)
    assert _main(monkeypatch, jt_copy, True, nvcc) == 0
    assert all(line.endswith(': already applied') for line in capsys.readouterr().out.splitlines())
    assert _hashes(jt_copy) == patched


def test_main_cuda12_cudnn8_says_nothing_needed(jt_copy, tmp_path, monkeypatch, capsys):
    before = _hashes(jt_copy)
    assert _main(monkeypatch, jt_copy, True, _fake_cuda(tmp_path, '12.4', 8)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and 'CUDA 12.4' in out[0] and 'cuDNN 8' in out[0] and 'no change' in out[0]
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
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       encoding='utf-8')
    assert r.returncode == 0, r.stdout + r.stderr

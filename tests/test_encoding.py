"""Text and paths that never break: encodings named everywhere, consoles that take any character,
runs under a home, temp and Jittor cache in a folder named with a space and CJK characters.

Why: Windows' default encoding with a Chinese locale is GBK, and a user
name there is often Chinese. The source check reads every Python file of
the repository (a path no test runs is checked too); .ci/run also runs the
tests with ``-X warn_default_encoding`` (tests/conftest.py makes our
EncodingWarnings errors).
"""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CJK = '用户 张三'
SOURCES = ['jittor_sbvsr', 'tools', 'bench', 'env', 'tests', 'inference.py', 'main.py', 'jittor_sbvsr_launcher.py']


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _text_mode(call, pos):
    """Whether an open-like call opens text: its mode (positional ``pos`` or mode=) has no 'b'."""
    mode = _kw(call, 'mode') or (call.args[pos] if len(call.args) > pos else None)
    if mode is None:
        return True
    return not (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and 'b' in mode.value)


def leaves_encoding_to_locale(node):
    """Whether ``node`` is a text open or a text subprocess pipe that names no encoding."""
    if not isinstance(node, ast.Call) or any(k.arg == 'encoding' for k in node.keywords):
        return False
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ''
    owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ''
    if name == 'open' and owner in ('', 'io'):  # os.open is a file descriptor
        return _text_mode(node, 1)
    if name in ('read_text', 'write_text', 'TextIOWrapper'):
        return True
    if name == 'fdopen':
        return _text_mode(node, 1)
    if name in ('NamedTemporaryFile', 'TemporaryFile', 'SpooledTemporaryFile') and owner == 'tempfile':
        return _kw(node, 'mode') is not None and _text_mode(node, 1)  # binary by default
    if name in ('run', 'Popen', 'check_output', 'check_call', 'call') and owner in ('subprocess', 'sp', ''):
        return any(k.arg in ('text', 'universal_newlines') and not (isinstance(k.value, ast.Constant)
                                                                   and not k.value.value) for k in node.keywords)
    return False


def unnamed_encodings(tree):
    """(line, call) of every text open or text subprocess pipe in ``tree`` that leaves the encoding to the locale."""
    return [(n.lineno, ast.unparse(n)[:100]) for n in ast.walk(tree) if leaves_encoding_to_locale(n)]


def _python_files():
    for s in SOURCES:
        p = ROOT / s
        yield from ([p] if p.is_file() else sorted(p.rglob('*.py')) if p.is_dir() else [])


def test_every_text_open_and_pipe_names_its_encoding():
    files = list(_python_files())
    assert len(files) > 50
    bad = [f'{p.relative_to(ROOT)}:{line}: {code}' for p in files
           for line, code in unnamed_encodings(ast.parse(p.read_text(encoding='utf-8')))]
    assert not bad, 'encoding left to the locale:\n' + '\n'.join(bad)


@pytest.mark.parametrize('code, bad', [
    ("open(p)", True), ("open(p, 'w')", True), ("open(p, 'rb')", False), ("open(p, encoding='utf-8')", False),
    ("io.open(p, mode='a')", True), ("os.open(p, os.O_RDONLY)", False), ("Path(p).read_text()", True),
    ("Path(p).write_text('x', encoding='utf-8')", False), ("subprocess.run(c, text=True)", True),
    ("subprocess.run(c, capture_output=True)", False), ("subprocess.Popen(c, universal_newlines=True)", True),
    ("subprocess.run(c, text=True, encoding='utf-8')", False), ("tempfile.NamedTemporaryFile('w')", False),
    ("tempfile.NamedTemporaryFile(mode='w')", True), ("os.fdopen(fd, 'w')", True), ("os.fdopen(fd, 'wb')", False),
    ("io.TextIOWrapper(b)", True), ("z.open(name)", False),
])
def test_the_source_check_finds_what_it_names(code, bad):
    assert bool(unnamed_encodings(ast.parse(code))) == bad


def test_console_streams_never_lose_a_line(tmp_path):
    """A console in a legacy encoding (here ASCII) prints a CJK file name escaped, not an exception."""
    code = ('import sys; sys.path.insert(0, sys.argv[1]); import jittor_sbvsr_launcher as l; '
            f'l.launch(lambda a: print("written {CJK}/x.png") or print("error: {CJK}", file=sys.stderr))')
    env = dict(os.environ, PYTHONIOENCODING='ascii')
    r = subprocess.run([sys.executable, '-c', code, str(ROOT)], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode('ascii').strip() == 'written \\u7528\\u6237 \\u5f20\\u4e09/x.png'
    assert r.stderr.decode('ascii').strip() == 'error: \\u7528\\u6237 \\u5f20\\u4e09'
    # without it the line is lost to a UnicodeEncodeError
    r = subprocess.run([sys.executable, '-c', f'print("{CJK}")'], capture_output=True, env=env, timeout=60)
    assert r.returncode != 0 and b'UnicodeEncodeError' in r.stderr

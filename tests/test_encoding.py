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

from conftest import run_child, symlink_or_skip

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
    # the name before the call's last dot: '' for a bare call, '.' for a longer chain (self.host.open)
    owner = (f.value.id if isinstance(f.value, ast.Name) else '.') if isinstance(f, ast.Attribute) else ''
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
    ("io.TextIOWrapper(b)", True), ("z.open(name)", False), ("self.host.open(spec)", False),
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


def _run_infer(args, env, cwd):
    """inference.py with encoding warnings on (ours would show as lines naming a file of this repo)."""
    r = run_child([sys.executable, '-X', 'warn_default_encoding', str(ROOT / 'inference.py'), *map(str, args)],
                  capture_output=True, text=True, encoding='utf-8', errors='replace', env=env, cwd=cwd,
                  timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    mine = [str(ROOT / p) for p in SOURCES if p not in ('tests', 'bench')]  # not .venv, which may sit in ROOT
    ours = [ln for ln in r.stderr.splitlines() if 'EncodingWarning' in ln and ln.startswith(tuple(mine))]
    assert not ours, ours
    assert 'Traceback' not in r.stderr and 'oneDNN is not installed' not in r.stderr, r.stderr[-3000:]
    return r


def _pngs(folder):
    return sorted(p for p in Path(folder).rglob('*.png'))


def test_demo_with_home_temp_and_jittor_cache_in_a_cjk_folder(tmp_path):
    """``inference.py --demo`` end to end with HOME, TMPDIR and the project root (the demo's input
    and output) in ``用户 张三``, and Jittor's home, so its compile cache and the oneDNN link, under
    ``~/.cache/jittor-sbvsr-tests/用户 张三``: Jittor builds its core and the model's kernels there,
    from sources and flags naming that path (the first run here takes minutes; the folder is kept,
    so later runs are warm: a path that changes would recompile every time).
    """
    from jittor_sbvsr import runtime
    base = tmp_path / CJK
    home, tmp, project = base / 'home', base / 'tmp', base / 'project'
    for d in (home, tmp, project):
        d.mkdir(parents=True)
    jhome = Path(runtime.jittor_home()) / '.cache' / 'jittor-sbvsr-tests' / CJK
    jhome.mkdir(parents=True, exist_ok=True)
    onednn = runtime.onednn_dir()
    if onednn != runtime.onednn_dir(sys.prefix):  # an older set-up's per-user copy: as that set-up made it
        link = jhome / '.cache' / 'jittor' / 'mkl' / runtime.ONEDNN_NAME
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            symlink_or_skip(link, onednn, target_is_directory=True)
    # Path.home() is HOME on POSIX, USERPROFILE on Windows: Jittor keeps its config.json there
    env = dict(os.environ, HOME=str(home), USERPROFILE=str(home), TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp),
               JITTOR_HOME=str(jhome),
               SBVSR_ROOT=str(project))
    env.pop('cache_name', None)
    _run_infer(['--demo'], env, cwd=str(base))
    out = project / 'demo_results' / 'infer_demo'
    assert len(_pngs(out)) >= 14, sorted(out.rglob('*'))  # 2 clips x 7 frames
    assert list(jhome.glob('.cache/jittor/jt*/*/*/*/*/*/jittor_core*')), 'Jittor did not use the CJK cache'
    assert list(tmp.iterdir()) == [], 'temporary files left behind'


def test_input_and_output_in_a_cjk_folder(tmp_path, recipe_pkl):
    """A frame folder and the results in ``用户 张三`` (read, written, logged: nothing escapes)."""
    import imageio.v2 as imageio
    clip = tmp_path / CJK / '输入 LR' / '视频 1'
    clip.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for t in range(5):
        imageio.imwrite(clip / f'{t:08d}.png', rng.randint(0, 256, (24, 32, 3)).astype(np.uint8))
    out = tmp_path / CJK / '结果 out'
    _run_infer(['--input_path', clip.parent, '--model_path', recipe_pkl, '--result_path', out,
                '--infer_flag', '运行', '--save_kernel'], dict(os.environ), cwd=str(tmp_path))
    run = out / 'infer_运行'
    # 5 frames, windows of 5: the centre frame's result, and its kernel
    made = [p.relative_to(run).as_posix() for p in _pngs(run)]
    assert made == ['视频 1/00000002.png', '视频 1/kernel/00000002.png'], made
    assert imageio.imread(run / '视频 1' / '00000002.png').shape == (96, 128, 3)
    log = next(run.glob('inference_log_*.txt')).read_text(encoding='utf-8')
    assert '视频 1' in log and CJK in log

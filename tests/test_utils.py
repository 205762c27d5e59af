"""Atomic output files, the progress bar and the logger."""
import io
import os
import stat

import numpy as np
import pytest

from conftest import symlink_or_skip
from PIL import Image

from jittor_sbvsr.errors import UserError
from jittor_sbvsr.utils import (Bar, Logger, atomic_save, atomic_write_bytes, ensure_dir,
                                format_seconds, save_npy_atomic, save_png_atomic)
from jittor_sbvsr.infer.report import VideoProgress
from jittor_sbvsr.utils import progress as progress_mod

ODD_NAME = 'out dir ü 名前'


def _leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith('.')]


# ---------------------------------------------------------------- files

def test_ensure_dir(tmp_path):
    d = tmp_path / ODD_NAME / 'a b' / 'c'
    assert ensure_dir(d) == str(d)
    assert d.is_dir()
    assert ensure_dir(str(d)) == str(d)  # existing is fine
    f = tmp_path / 'file'
    f.write_text('x', encoding='utf-8')
    with pytest.raises(UserError, match='not a folder'):
        ensure_dir(f)
    with pytest.raises(UserError, match='cannot create folder'):
        ensure_dir(f / 'sub')


def test_atomic_write_bytes_odd_path(tmp_path):
    p = tmp_path / ODD_NAME / 'frame 0 é.bin'
    atomic_write_bytes(p, b'hello')
    assert p.read_bytes() == b'hello'
    atomic_write_bytes(str(p), b'again')  # replaces
    assert p.read_bytes() == b'again'
    assert _leftovers(p.parent) == []


def test_atomic_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / 'm.bin', b'x')
    finally:
        os.umask(old)
    if os.name == 'posix':
        assert stat.S_IMODE(os.stat(tmp_path / 'm.bin').st_mode) == 0o644


def test_atomic_replace_keeps_the_files_mode(tmp_path):
    p = tmp_path / 'w.pkl'
    p.write_bytes(b'old')
    os.chmod(p, 0o640)
    atomic_write_bytes(p, b'new')
    if os.name == 'posix':
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert p.read_bytes() == b'new'


def test_remove_stale_temps_only_our_pattern(tmp_path):
    """Leftovers of interrupted atomic writes go; anything else stays, whatever it looks like."""
    from jittor_sbvsr.utils.files import temp_name, is_temp_name, remove_stale_temps, stale_note
    sub = tmp_path / ODD_NAME
    sub.mkdir()
    ours = [os.path.basename(temp_name(str(tmp_path / n))) for n in ('frame 1.png', 'model.pkl', 'history')]
    assert all(is_temp_name(n) for n in ours)
    keep = ['.x.png.0123abcd.tmp.npy',     # extension is not the name's
            '.x.png.0123ABCD.tmp.png',     # not our hex
            '.x.png.0123abc.tmp.png',      # 7 digits
            'x.png.0123abcd.tmp.png',      # not hidden
            '.x.pkl.abcd_123.tmp',         # tempfile.mkstemp's, not ours
            'frame 1.png', '.hidden']
    assert not any(is_temp_name(n) for n in keep)
    for n in ours + keep:
        (tmp_path / n).write_bytes(b'')
        (sub / n).write_bytes(b'')
    symlink_or_skip(tmp_path / ours[0].replace('frame 1', 'link'), tmp_path / 'frame 1.png')
    removed = remove_stale_temps(tmp_path)
    assert sorted(os.path.basename(p) for p in removed) == sorted(ours)
    assert sorted(os.listdir(tmp_path)) == sorted(keep + [ODD_NAME, ours[0].replace('frame 1', 'link')])
    assert len(os.listdir(sub)) == len(ours + keep)  # not recursive unless asked
    assert len(remove_stale_temps(tmp_path, recursive=True, of='model.pkl')) == 1
    assert 'removed 1 temporary file(s)' in stale_note(removed[:1]) and stale_note([]) is None


def test_atomic_save_failure_keeps_old_and_cleans_up(tmp_path):
    p = tmp_path / 'keep.txt'
    p.write_text('old', encoding='utf-8')
    seen = []

    def writer(tmp):
        seen.append(tmp)
        assert os.path.dirname(tmp) == str(tmp_path)
        assert tmp.endswith('.txt')
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write('partial')
        raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        atomic_save(p, writer)
    assert p.read_text(encoding='utf-8') == 'old'
    assert not os.path.exists(seen[0])
    assert _leftovers(tmp_path) == []

    def interrupted(tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save(tmp_path / 'new.txt', interrupted)
    assert not (tmp_path / 'new.txt').exists()
    assert _leftovers(tmp_path) == []


def _held_open(monkeypatch, name, times):
    """``os.<name>`` as Windows does it on a file another process holds open (an earlier run's worker
    finishing, an antivirus or the indexer reading it): PermissionError ("Access is denied",
    WinError 5) the first ``times`` calls."""
    real, calls = getattr(os, name), []

    def fn(*args):
        calls.append(args)
        if len(calls) <= times:
            raise PermissionError(13, 'Access is denied')
        return real(*args)
    monkeypatch.setattr(os, name, fn)
    return calls


def test_replacing_a_file_held_open_waits_for_it(tmp_path, monkeypatch):
    from jittor_sbvsr.infer.resume import Progress
    from jittor_sbvsr.utils import files
    monkeypatch.setattr(files, 'SHARING_WAITS', (0.01, 0.02, 0.04, 0.08))
    record = tmp_path / ODD_NAME / 'progress.jsonl'
    atomic_write_bytes(record, b'old\n')
    calls = _held_open(monkeypatch, 'replace', 3)  # closed after three tries
    atomic_write_bytes(record, b'new\n')
    assert record.read_bytes() == b'new\n' and len(calls) == 4 and _leftovers(record.parent) == []
    calls = _held_open(monkeypatch, 'replace', 99)  # never closed: one error naming the file, nothing lost
    with pytest.raises(UserError, match=r'progress\.jsonl: cannot replace it \(Access is denied\): another '
                                        r'program keeps it open'):
        atomic_write_bytes(record, b'newer\n')
    assert len(calls) == len(files.SHARING_WAITS) + 1
    assert record.read_bytes() == b'new\n' and _leftovers(record.parent) == []
    monkeypatch.undo()
    # a finished run's record goes once the worker that held it has closed it
    progress = Progress(str(tmp_path), {'model': 'x'}, {})
    monkeypatch.setattr(files, 'SHARING_WAITS', (0.01, 0.02))
    calls = _held_open(monkeypatch, 'unlink', 2)
    progress.finish()
    assert len(calls) == 3 and not os.path.exists(progress.path)


def test_atomic_save_os_error_is_user_error(tmp_path):
    def writer(tmp):
        raise OSError(28, 'No space left on device')

    with pytest.raises(UserError) as e:
        atomic_save(tmp_path / 'x.png', writer)
    assert str(tmp_path / 'x.png') in str(e.value) and 'No space left' in str(e.value)
    assert _leftovers(tmp_path) == []

    (tmp_path / 'adir').mkdir()
    with pytest.raises(UserError):
        atomic_write_bytes(tmp_path / 'adir', b'x')  # cannot replace a folder
    assert _leftovers(tmp_path) == []


def test_save_png_atomic(tmp_path):
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (5, 7, 3)).astype(np.uint8)
    p = tmp_path / ODD_NAME / '00000000 é.png'
    save_png_atomic(p, img)
    np.testing.assert_array_equal(np.asarray(Image.open(p)), img)
    g = img[:, :, 0]
    save_png_atomic(tmp_path / 'g.data', g)  # PNG whatever the extension
    with Image.open(tmp_path / 'g.data') as im:
        assert im.format == 'PNG'
        np.testing.assert_array_equal(np.asarray(im), g)
    with pytest.raises(ValueError):
        save_png_atomic(tmp_path / 'f.png', img.astype(np.float32))
    with pytest.raises(ValueError):
        save_png_atomic(tmp_path / 'f.png', img[:, :, :2])
    assert _leftovers(p.parent) == []


def test_save_npy_atomic(tmp_path):
    a = np.arange(169, dtype=np.float32).reshape(13, 13)
    p = tmp_path / ODD_NAME / 'kernel é'  # no extension: np.save must not add one
    save_npy_atomic(p, a)
    assert p.is_file() and not (p.parent / 'kernel é.npy').exists()
    b = np.load(p)
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, a)
    save_npy_atomic(tmp_path / 'k.npy', a)
    np.testing.assert_array_equal(np.load(tmp_path / 'k.npy'), a)
    assert _leftovers(p.parent) == [] and _leftovers(tmp_path) == []


# ---------------------------------------------------------------- progress

class FakeTTY(io.StringIO):
    def isatty(self):
        return True

    def fileno(self):
        raise io.UnsupportedOperation


def test_format_seconds():
    assert format_seconds(0) == '00:00'
    assert format_seconds(65.4) == '01:05'
    assert format_seconds(3725) == '1:02:05'
    assert format_seconds(None) == '--:--'
    assert format_seconds(float('inf')) == '--:--'


def test_bar_not_a_tty_prints_one_final_line_not_one_per_update():
    out = io.StringIO()
    with Bar(1000, 'epoch 1', unit='batch', stream=out, interval=3600) as bar:
        for i in range(1000):
            bar.update(1, f'loss={i / 1000:.4f}')
        assert out.getvalue() == ''
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and '\r' not in out.getvalue(), lines
    assert lines[0].startswith('epoch 1: 1000/1000 batches in ') and lines[0].endswith('loss=0.9990')
    bar.close()  # idempotent
    assert len(out.getvalue().splitlines()) == 1


def test_bar_not_a_tty_prints_a_line_per_interval_with_the_eta(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, 'perf_counter', lambda: clock[0])
    out = io.StringIO()
    with Bar(4, 'evaluation', unit='window', stream=out, interval=30) as bar:
        for t in (10, 31, 40, 70):  # seconds since the start, one window each
            clock[0] = 100.0 + t
            bar.update(1, f'psnr={t}')
    lines = out.getvalue().splitlines()
    # at 31 s (2 of 4 done); none at 40 s (too soon) nor at 70 s (the last window: the final line says it)
    assert lines == ['evaluation: 2/4 windows, 00:31 elapsed, ETA 00:31, psnr=31',
                     'evaluation: 4/4 windows in 01:10 (17.50 s/window), psnr=70'], lines


def test_bar_tty_updates_in_place():
    tty = FakeTTY()
    with Bar(200, 'epoch 3', unit='batch', stream=tty) as bar:
        for _ in range(200):
            bar.update(1, 'loss=0.5000')
    text = tty.getvalue()
    assert text.count('\n') == 1 and text.endswith('\n')  # the finished bar stays, once
    assert text.count('\r') >= 2
    last = text.rstrip('\n').split('\r')[-1]
    assert last.startswith('epoch 3: 100%') and '200/200' in last and 'loss=0.5000' in last


def test_bar_disabled_prints_nothing():
    for stream in (io.StringIO(), FakeTTY()):
        with Bar(3, 'x', stream=stream, interval=0, enabled=False) as bar:
            for _ in range(3):
                bar.update()
        assert stream.getvalue() == ''


def test_bar_left_by_an_exception_leaves_no_final_line():
    for stream in (io.StringIO(), FakeTTY()):
        with pytest.raises(ValueError):
            with Bar(5, 'blur-down', unit='frame', stream=stream, interval=3600) as bar:
                bar.update()
                raise ValueError('boom')
        assert '\n' not in stream.getvalue()  # a terminal's bar is cleared with '\r'


# ---------------------------------------------------------------- logger

def test_logger_writes_file_and_stream(tmp_path):
    out = io.StringIO()
    path = tmp_path / ODD_NAME / 'infer log.txt'
    log = Logger(path, stream=out)
    log.log('first é')
    assert path.read_text(encoding='utf-8') == 'first é\n'  # flushed per line
    log('second')
    log.close()
    with Logger(path, stream=out) as log2:  # appends
        log2.log('third')
    assert path.read_text(encoding='utf-8') == 'first é\nsecond\nthird\n'
    assert out.getvalue() == 'first é\nsecond\nthird\n'
    Logger(stream=out).log('no file')
    assert out.getvalue().endswith('no file\n')


def test_logger_during_a_bar_clears_and_redraws_it():
    tty = FakeTTY()
    bar = Bar(3, 'run', stream=tty)
    bar.update(1, 'psnr=21.0')
    before = len(tty.getvalue())
    Logger(stream=tty).log('000/00000000 PSNR 21.0')
    added = tty.getvalue()[before:]
    # blank the bar line, print the message on a clean line, redraw the bar
    head, _, redraw = added.partition('000/00000000 PSNR 21.0\n')
    assert head.startswith('\r') and head.endswith('\r') and not head.strip(), repr(added)
    assert redraw.startswith('\rrun:'), repr(added)
    bar.update(2)
    bar.close()
    Logger(stream=tty).log('done')  # no live bar: plain line
    assert tty.getvalue().endswith('\ndone\n')


def test_logger_bad_path(tmp_path):
    f = tmp_path / 'file'
    f.write_text('x', encoding='utf-8')
    with pytest.raises(UserError, match='cannot open log file'):
        Logger(f / 'log.txt')


def test_video_progress_not_a_tty_prints_sparse_lines():
    """Off a terminal (CI logs): no line per frame, one per video at its end (and per interval)."""
    out = io.StringIO()
    with VideoProgress(1000, stream=out, interval=3600) as bar:
        for name in ('a', 'b'):
            bar.video(name, 500)
            for _ in range(500):
                bar.update(psnr='30.000')
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[1].startswith('b: 500/500 frames in ') and 'psnr=30.000, 1000/1000 in all' in lines[1]


def test_video_progress_tty_updates_in_place_with_total_eta():
    """On a terminal: tqdm redraws one line per video ('\\r'), never a new line per frame."""
    out = FakeTTY()
    with VideoProgress(400, stream=out) as bar:
        for name in ('a', 'b'):
            bar.video(name, 200)
            for _ in range(200):
                bar.update()
    text = out.getvalue()
    assert text.count('\n') <= 2, text[-500:]  # one per finished bar
    assert 'total ETA' in text and 'a: 100%' in text and 'b: 100%' in text


def test_logger_line_clears_a_tqdm_bar():
    """A log line on the bar's stream: the bar is wiped first and redrawn after, not overwritten."""
    out = FakeTTY()
    bar = VideoProgress(10, stream=out)
    bar.video('v', 10)
    bar.update()
    drawn = len(out.getvalue())
    Logger(stream=out)('hello')
    text = out.getvalue()[drawn:]
    before, after = text.split('hello\n')
    assert before.startswith('\r') and before.strip(' \r\x1b[A') == '', repr(before)  # the bar wiped
    assert 'v:' in after, repr(after)  # and redrawn under the line
    bar.close()

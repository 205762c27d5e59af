"""No silent wrong numbers, no tracebacks.

Every bad input to inference.py is one 'error:' line naming the file or flag,
exit code 2, and nothing written; what runs, runs on the architecture the
checkpoint describes; Ctrl-C is exit 130 and one line. Test names say the
case. Runs use a tiny checkpoint (n_feat 16, 1 + 2 ResBlocks) saved the way
the trainer saves one, on 32x48 LR frames.
"""
import os
import signal
import subprocess
import sys
import time

import imageio.v2 as imageio
import numpy as np
import pytest

from conftest import ROOT, child_env, infer_here, posix_only, run_child
from test_inference_cli import assert_clean_error, run_cli

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr.data.images import read_frame
from jittor_sbvsr.errors import UserError
from jittor_sbvsr.metrics.psnr_ssim import psnr_ssim

def _frames(folder, names, size, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for n in names:
        imageio.imwrite(folder / n, rng.randint(0, 256, tuple(size) + (3,)).astype(np.uint8))
    return folder


def _flat(folder, names, size):
    """Frame i of ``names`` all grey level 20 + 25 i: each frame scores clearly differently."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        imageio.imwrite(folder / n, np.full(tuple(size) + (3,), 20 + 25 * i, np.uint8))
    return folder


def _names(n, fmt='{:08d}.png'):
    return [fmt.format(t) for t in range(n)]


def _runs_nothing(r, out):
    """A refused run: one clean error line, no result folder."""
    assert not out.exists(), sorted(out.rglob('*'))
    return r


# ------------------------------------------------------------ 1. metrics

@pytest.fixture(scope='module')
def paired_run(tmp_path_factory, tiny):
    """Video 'sub': LR frames 2..6 of a 9-frame GT (names match a subset); video 'renamed':
    GT named frame_0 .. frame_4, LR 00000000 .. 00000004 (no name in common)."""
    d = tmp_path_factory.mktemp('paired')
    _frames(d / 'LR' / 'sub', [f'{t:08d}.png' for t in range(2, 7)], (32, 48), 1)
    _flat(d / 'GT' / 'sub', _names(9), (128, 192))
    _frames(d / 'LR' / 'renamed', _names(5), (32, 48), 3)
    _flat(d / 'GT' / 'renamed', _names(5, 'frame_{}.png'), (128, 192))
    r = run_cli('--input_path', d / 'LR', '--gt_path', d / 'GT', '--model_path', tiny['x4'],
                '--result_path', d / 'out', '--infer_flag', 'p', '--border')
    return d, r


def _logged_psnr(stdout, video, stem):
    line = next(ln for ln in stdout.splitlines() if ln.startswith(f'> {video}-{stem} '))
    return float(line.split('PSNR=')[1].split(',')[0])


def test_gt_paired_by_name_not_by_position(paired_run):
    d, r = paired_run
    assert r.returncode == 0, r.stderr[-3000:]
    for t in range(2, 7):
        sr = read_frame(d / 'out' / 'infer_p' / 'sub' / f'{t:08d}.png')
        right = psnr_ssim(sr, read_frame(d / 'GT' / 'sub' / f'{t:08d}.png'))[0]
        wrong = psnr_ssim(sr, read_frame(d / 'GT' / 'sub' / f'{t - 2:08d}.png'))[0]  # by position
        assert _logged_psnr(r.stdout, 'sub', f'{t:08d}') == pytest.approx(right, abs=1e-5)
        assert abs(right - wrong) > 0.1


def test_gt_named_differently_pairs_by_position_with_a_warning(paired_run):
    d, r = paired_run
    assert r.returncode == 0, r.stderr[-3000:]
    warning = [ln for ln in r.stdout.splitlines() if ln.startswith('warning:')]
    assert len(warning) == 1 and 'by position' in warning[0] and 'frame_0.png' in warning[0]
    log = next((d / 'out' / 'infer_p').glob('inference_log_*.txt')).read_text(encoding='utf-8')
    assert warning[0] in log
    for t in range(5):
        sr = read_frame(d / 'out' / 'infer_p' / 'renamed' / f'{t:08d}.png')
        expected = psnr_ssim(sr, read_frame(d / 'GT' / 'renamed' / f'frame_{t}.png'))[0]
        assert _logged_psnr(r.stdout, 'renamed', f'{t:08d}') == pytest.approx(expected, abs=1e-5)


def test_gt_names_partly_different_is_an_error(tmp_path, tiny):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    _frames(tmp_path / 'GT' / 'v', _names(4) + ['extra.png'], (128, 192), 1)
    err = assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--gt_path', tmp_path / 'GT',
                                     '--model_path', tiny['x4'], '--result_path', tmp_path / 'out'),
                             '00000004', 'no ground truth of the same name')
    assert str(tmp_path / 'GT' / 'v') in err
    _runs_nothing(None, tmp_path / 'out')


@pytest.mark.parametrize('gt_size', [(132, 192), (128, 200), (256, 384)], ids=['taller', 'wider', 'x8'])
def test_gt_larger_than_lr_times_scale_is_refused(tmp_path, tiny, gt_size):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    _frames(tmp_path / 'GT' / 'v', _names(5), gt_size, 1)
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--gt_path', tmp_path / 'GT',
                               '--model_path', tiny['x4'], '--result_path', tmp_path / 'out'),
                       str(tmp_path / 'GT' / 'v' / '00000000.png'), f'{gt_size[0]}x{gt_size[1]}', '32x48',
                       '128x192')
    assert not (tmp_path / 'out').exists()


def test_x2_model_against_x4_ground_truth_is_refused(tmp_path, tiny):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    _frames(tmp_path / 'GT' / 'v', _names(5), (128, 192), 1)
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--gt_path', tmp_path / 'GT',
                               '--model_path', tiny['x2'], '--scale', 2, '--result_path', tmp_path / 'out'),
                       '00000000.png', '128x192', 'x2 makes 64x96')
    assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------ 2. flags and inputs, up front

@pytest.mark.parametrize('scale', [0, -1])
def test_scale_zero_or_negative_is_one_line(tmp_path, tiny, scale):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'], '--scale', scale,
                               '--result_path', tmp_path / 'out'), f'--scale {scale}', 'power of two', 'x4')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('model,ckpt_scale', [('x2', 2), ('x4', 4)])
def test_scale_3_names_the_checkpoint_scale(tmp_path, tiny, model, ckpt_scale):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    err = assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny[model], '--scale', 3,
                                     '--result_path', tmp_path / 'out'), '--scale 3', f'is x{ckpt_scale}')
    assert 'key' not in err


def test_scale_flag_conflicting_with_checkpoint_names_both(tmp_path, tiny):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'], '--scale', 2,
                               '--result_path', tmp_path / 'out'), 'it has scale 4', '--scale 2')


@pytest.mark.parametrize('n_seq', [4, 0, 3])
def test_n_seq_even_zero_or_not_the_checkpoints(tmp_path, tiny, n_seq):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'], '--n_seq', n_seq,
                               '--result_path', tmp_path / 'out'), f'--n_seq {n_seq}', '5')
    assert not (tmp_path / 'out').exists()


def test_size_must_mode_zero_is_one_line(tmp_path, tiny):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'],
                               '--size_must_mode', 0, '--result_path', tmp_path / 'out'), '--size_must_mode 0')


@pytest.mark.parametrize('argv,needle', [(['--scale', 'four'], '--scale'), (['--device', 'tpu'], '--device'),
                                         (['--tile', -2], '--tile')])
def test_malformed_flags_are_one_line(tmp_path, tiny, argv, needle):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'], *argv,
                               '--result_path', tmp_path / 'out'), needle)


def test_frame_size_mismatch_in_a_later_video_is_found_before_any_output(tmp_path, tiny):
    _frames(tmp_path / 'LR' / 'a', _names(5), (32, 48), 0)
    _frames(tmp_path / 'LR' / 'b', _names(5), (32, 48), 1)
    _frames(tmp_path / 'LR' / 'b', ['00000003.png'], (32, 40), 2)
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'],
                               '--result_path', tmp_path / 'out'),
                       str(tmp_path / 'LR' / 'b' / '00000003.png'), '32x40', '32x48')
    assert not (tmp_path / 'out').exists()


def test_unreadable_frame_in_a_later_video_is_found_before_any_output(tmp_path, tiny):
    _frames(tmp_path / 'LR' / 'a', _names(5), (32, 48), 0)
    _frames(tmp_path / 'LR' / 'b', _names(5), (32, 48), 1)
    (tmp_path / 'LR' / 'b' / '00000004.png').write_bytes(b'\x89PNG\r\n\x1a\n cut short')
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'],
                               '--result_path', tmp_path / 'out'), str(tmp_path / 'LR' / 'b' / '00000004.png'))
    assert not (tmp_path / 'out').exists()


@pytest.fixture(scope='module')
def small_run(tmp_path_factory, tiny):
    """4x8 LR frames with ground truth (16x32: too small for the 11x11 SSIM window after the 4-px
    crop), run into a result folder that holds only a leftover temp file of a killed run."""
    d = tmp_path_factory.mktemp('small')
    _frames(d / 'LR' / 'v', _names(3), (4, 8), 0)
    _frames(d / 'GT' / 'v', _names(3), (16, 32), 1)
    out = d / 'out' / 'infer_s'
    (out / 'v').mkdir(parents=True)
    (out / 'v' / '.00000001.png.0123abcd.tmp.png').write_bytes(b'half a png')
    r = run_cli('--input_path', d / 'LR', '--gt_path', d / 'GT', '--model_path', tiny['x4'],
                '--result_path', d / 'out', '--infer_flag', 's', '--border')
    return out, r


def test_frames_too_small_for_metrics_still_get_sr_output(small_run):
    out, r = small_run
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (out / 'v').glob('*.png')) == _names(3)
    assert read_frame(out / 'v' / '00000002.png').shape == (16, 32, 3)
    assert 'PSNR=' not in r.stdout and 'Total AVG' not in r.stdout
    assert '# Video:v no PSNR/SSIM: 16x32 frames are too small for an 11x11 SSIM window' in r.stdout


def test_stale_temp_files_removed_at_next_run(small_run):
    out, r = small_run
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / 'v' / '.00000001.png.0123abcd.tmp.png').exists()
    note = [ln for ln in r.stdout.splitlines() if ln.startswith('note: removed 1 temporary file')]
    assert len(note) == 1 and '.00000001.png.0123abcd.tmp.png' in note[0]


# ------------------------------------------------------------ 4. messages that say what is wrong

def test_nan_weights_are_reported_as_nan(tmp_path, tiny):
    from jittor_sbvsr.weights.checkpoint import load_state, save_state_atomic
    state = load_state(tiny['x4'])
    state['recons_net.1.conv2.weight'][0, 0, 1, 1] = np.nan
    save_state_atomic(state, tmp_path / 'nan.pkl')
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    err = assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tmp_path / 'nan.pkl',
                                     '--result_path', tmp_path / 'out'), 'nan.pkl', 'NaN',
                             'recons_net.1.conv2.weight')
    assert 'did not load' not in err


def test_missing_gt_path_is_called_ground_truth(tmp_path, tiny):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    err = assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--gt_path', tmp_path / 'no GT',
                                     '--model_path', tiny['x4'], '--result_path', tmp_path / 'out'),
                             'no GT', 'ground-truth folder (--gt_path) does not exist')
    assert 'input folder' not in err


def test_directory_as_model_path_is_called_a_folder(tmp_path):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    (tmp_path / 'models').mkdir()
    err = assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tmp_path / 'models',
                                     '--result_path', tmp_path / 'out'), 'is a folder', '--model_path')
    assert 'not found' not in err


def test_pwc_net_weights_as_model_say_so(tmp_path, tiny):
    from jittor_sbvsr.weights.checkpoint import FLOW_PREFIX, load_state, save_state_atomic
    flow = {k[len(FLOW_PREFIX):]: v for k, v in load_state(tiny['x4']).items() if k.startswith(FLOW_PREFIX)}
    save_state_atomic(flow, tmp_path / 'pwc.pkl')
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tmp_path / 'pwc.pkl',
                               '--result_path', tmp_path / 'out'), 'pwc.pkl', 'PWC-Net weights alone')


# ------------------------------------------------------------ 3./5. checkpoints describe themselves

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """model_latest.pkl of a one-step main.py --template Self_Blind_VSR_Demo run (n_feat 16, 1 + 2 blocks)."""
    from jittor_sbvsr.data.synthetic import make_demo_videos
    d = tmp_path_factory.mktemp('trained')
    make_demo_videos(d / 'clips', n_videos=1, n_frames=5)
    r = run_child([sys.executable, str(ROOT / 'main.py'), '--template', 'Self_Blind_VSR_Demo', '--cpu',
                        '--dir_data', str(d / 'clips'), '--dir_data_test', '', '--experiment_dir', str(d / 'exp'),
                        '--save', 'demo', '--epochs', '1', '--test_every', '1', '--batch_size', '1',
                        '--n_threads', '0'], capture_output=True, text=True, cwd=ROOT, timeout=900, encoding='utf-8')
    assert r.returncode == 0, r.stderr[-3000:]
    return d, d / 'exp' / 'demo' / 'model' / 'model_latest.pkl'


def test_inference_runs_a_checkpoint_the_demo_trainer_wrote(trained):
    d, model = trained
    r = run_cli('--input_path', d / 'clips' / 'LR_blurdown_x4', '--gt_path', d / 'clips' / 'HR',
                '--model_path', model, '--result_path', d / 'out', '--infer_flag', 't')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'n_feat 16, 1 + 2 ResBlocks' in r.stdout and '# Total AVG-PSNR=' in r.stdout
    assert len(list((d / 'out' / 'infer_t' / '000').glob('*.png'))) == 1  # 5 frames, no --border
    log = next((d / 'out' / 'infer_t').glob('inference_log_*.txt')).read_text(encoding='utf-8')
    assert log.splitlines()[-1].startswith('completed: 1 frames of 1 video(s)')


def test_pre_train_with_another_architecture_names_the_flags(trained, tmp_path):
    d, model = trained
    r = run_child([sys.executable, str(ROOT / 'main.py'), '--template', 'Self_Blind_VSR_Finetune', '--cpu',
                        '--dir_data', str(d / 'clips' / 'LR_blurdown_x4'), '--patch_size', '16',
                        '--pre_train', str(model),
                        '--experiment_dir', str(tmp_path / 'exp'), '--n_threads', '0'],
                  capture_output=True, text=True, cwd=ROOT, timeout=900, encoding='utf-8')
    err = assert_clean_error(r, str(model), 'it has n_feat 16, but --n_feat 128',
                             'pass --n_feat 16 --extra_RBS 1 --recons_RBS 2')
    assert 'missing key' not in err
    assert not (tmp_path / 'exp').exists()


# ------------------------------------------------------------ 5./6. Ctrl-C, the log's last line, reruns

@posix_only('SIGINT to a process group (os.killpg)')
def test_ctrl_c_exits_130_with_one_line_and_no_sigchld_message(tmp_path, tiny):
    """SIGINT to the whole process group (as a terminal's Ctrl-C) once the first frame is written."""
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    _frames(tmp_path / 'LR' / 'v', _names(12), (32, 48), 0)
    out = tmp_path / 'out'
    with open(tmp_path / 'stdout', 'w', encoding='utf-8') as so, open(tmp_path / 'stderr', 'w', encoding='utf-8') as se:
        p = subprocess.Popen([sys.executable, str(ROOT / 'inference.py'), '--input_path', str(tmp_path / 'LR'),
                              '--model_path', str(tiny['x4']), '--result_path', str(out), '--infer_flag', 'c',
                              '--border'], stdout=so, stderr=se, cwd=ROOT, start_new_session=True,
                              env=child_env())
        t0 = time.time()
        try:
            while '> v-' not in (tmp_path / 'stdout').read_text(encoding='utf-8'):
                assert p.poll() is None, (tmp_path / 'stderr').read_text(encoding='utf-8')[-3000:]
                assert time.time() - t0 < 600
                time.sleep(0.1)
            os.killpg(p.pid, signal.SIGINT)
            rc = p.wait(timeout=300)
        finally:
            if p.poll() is None:
                p.kill()
    stderr = (tmp_path / 'stderr').read_text(encoding='utf-8')
    assert rc == 130, stderr[-3000:]
    assert 'Traceback' not in stderr and 'SIGCHLD' not in stderr
    assert not [ln for ln in stderr.splitlines() if ln.lower().startswith('error')]
    assert len([ln for ln in stderr.splitlines() if 'interrupted' in ln]) == 1
    log = next((out / 'infer_c').glob('inference_log_*.txt')).read_text(encoding='utf-8')
    assert log.splitlines()[-1].startswith('interrupted (Ctrl-C) after ')
    assert not [q for q in out.rglob('*') if '.tmp' in q.name]
    for png in (out / 'infer_c' / 'v').glob('*.png'):
        assert read_frame(png).shape == (128, 192, 3)


def test_log_records_the_error_that_stopped_the_run(tmp_path, tiny):
    """The second frame cannot be written (a folder holds its name; the host worker writes it):
    the run stops there with that error, which is the log's last line."""
    _frames(tmp_path / 'LR' / 'v', _names(3), (32, 48), 0)
    blocked = tmp_path / 'out' / 'infer_e' / 'v' / '00000001.png'
    blocked.mkdir(parents=True)  # a folder, no file: the output folder is still free
    with pytest.raises(UserError, match='cannot write') as err:
        infer_here('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'], '--result_path', tmp_path / 'out',
                   '--infer_flag', 'e', '--border')
    assert str(err.value).startswith(f'{blocked}: cannot write')
    log = next((tmp_path / 'out' / 'infer_e').glob('inference_log_*.txt')).read_text(encoding='utf-8')
    assert log.splitlines()[-1] == f'error: {err.value}'
    assert '> v-00000000' in log and '> v-00000001' not in log and 'completed' not in log
    assert (tmp_path / 'out' / 'infer_e' / 'v' / '00000000.png').is_file()


def test_reused_infer_flag_is_refused_and_the_old_run_kept(tmp_path, tiny):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    old = tmp_path / 'out' / 'infer_mine'
    _frames(old / 'v', ['00000002.png'], (128, 192), 9)
    before = (old / 'v' / '00000002.png').read_bytes()
    assert_clean_error(run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'],
                               '--result_path', tmp_path / 'out', '--infer_flag', 'mine'),
                       str(old), 'earlier run', '--infer_flag')
    assert sorted(p.name for p in old.rglob('*')) == ['00000002.png', 'v']
    assert (old / 'v' / '00000002.png').read_bytes() == before


def test_automatic_run_names_move_to_a_fresh_folder(tmp_path):
    from jittor_sbvsr.infer.plan import choose_output_dir
    base = tmp_path / 'infer_demo'
    assert choose_output_dir(str(tmp_path), 'demo', named=False) == (str(base), None)
    (base / 'v').mkdir(parents=True)
    (base / 'v' / '.0.png.0123abcd.tmp.png').write_bytes(b'')  # a leftover only: still free
    assert choose_output_dir(str(tmp_path), 'demo', named=True) == (str(base), None)
    (base / 'v' / '0.png').write_bytes(b'')
    folder, note = choose_output_dir(str(tmp_path), 'demo', named=False)
    assert folder == f'{base}_2' and 'earlier run' in note
    with pytest.raises(UserError, match='earlier run'):
        choose_output_dir(str(tmp_path), 'demo', named=True)
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['.0.png.0123abcd.tmp.png', '0.png', 'infer_demo', 'v']

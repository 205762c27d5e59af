"""GPU machines as users have them, faked here: ranks and GPUs, a driver without nvcc, TF32,
the memory plan of a small card, ranks that agree on budgets, evaluation in tiles.

No GPU is needed: the MPI launcher's variables, nvidia-smi's answer, the driver and the
card's memory are handed in; what would run on the GPU is planned, not run.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]
G = 2 ** 30


def _gpu_box(monkeypatch, nvcc='/usr/local/cuda/bin/nvcc', cudnn=True):
    """A fresh runtime.py on a faked machine: a CUDA driver, ``nvcc`` (None: none), cuDNN or not."""
    rt = _runtime()
    monkeypatch.setattr(rt, 'onednn_installed', lambda d=None: True)
    monkeypatch.setattr(rt, 'cuda_driver_present', lambda: True)
    monkeypatch.setattr(rt, 'find_nvcc', lambda: nvcc)
    monkeypatch.setattr(rt, 'jittor_finds_cudnn', lambda path: cudnn)
    monkeypatch.setattr(rt, 'jtcuda_installed', lambda: False)
    return rt


def _runtime():
    spec = importlib.util.spec_from_file_location('_sbvsr_runtime_gpu', ROOT / 'jittor_sbvsr' / 'runtime.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------- one GPU per rank ----

@pytest.mark.parametrize('env,n,want', [
    ({}, 4, None),                                                    # not under a launcher
    ({'OMPI_COMM_WORLD_LOCAL_RANK': '1'}, 2, '1'),                    # Open MPI
    ({'OMPI_COMM_WORLD_LOCAL_RANK': '3'}, 2, '1'),                    # more ranks than GPUs: k mod n
    ({'MPI_LOCALRANKID': '2'}, 4, '2'),                               # MPICH, Intel MPI
    ({'MV2_COMM_WORLD_LOCAL_RANK': '1'}, 4, '1'),                     # MVAPICH
    ({'SLURM_LOCALID': '1'}, 2, '1'),                                 # srun
    ({'OMPI_COMM_WORLD_LOCAL_RANK': '1'}, 0, None),                   # no GPU: nothing changes
    ({'OMPI_COMM_WORLD_LOCAL_RANK': '1', 'CUDA_VISIBLE_DEVICES': '5'}, 8, None),     # set per rank: kept
    ({'OMPI_COMM_WORLD_LOCAL_RANK': '1', 'CUDA_VISIBLE_DEVICES': '4,6'}, 8, '6'),    # a list: the k-th
    ({'OMPI_COMM_WORLD_LOCAL_RANK': '2', 'CUDA_VISIBLE_DEVICES': '4,6'}, 8, '4'),
    ({'OMPI_COMM_WORLD_LOCAL_RANK': '1', 'CUDA_VISIBLE_DEVICES': ''}, 8, None),      # none: kept
])
def test_gpu_for_rank(env, n, want):
    from jittor_sbvsr import runtime
    assert runtime.gpu_for_rank(env, n) == want


def test_ranks_per_gpu_and_placement():
    from jittor_sbvsr import runtime
    two = {'OMPI_COMM_WORLD_LOCAL_RANK': '1', 'OMPI_COMM_WORLD_LOCAL_SIZE': '2'}
    assert runtime.ranks_per_gpu(two, 2) == 1 and runtime.ranks_per_gpu(two, 1) == 2
    assert runtime.ranks_per_gpu({}, 1) == 1
    assert runtime.ranks_per_gpu(dict(two, CUDA_VISIBLE_DEVICES='3'), 8) == 2
    env = dict(two)
    line = runtime.place_rank(env, n_gpus=2)
    assert env['CUDA_VISIBLE_DEVICES'] == '1' and 'GPU 1 (set by jittor-sbvsr)' in line and 'shared' not in line
    env = dict(two)
    line = runtime.place_rank(env, n_gpus=1)
    assert env['CUDA_VISIBLE_DEVICES'] == '0' and 'shared by 2 ranks' in line
    env = dict(two, CUDA_VISIBLE_DEVICES='7')
    assert 'GPU 7 (CUDA_VISIBLE_DEVICES as given)' in runtime.place_rank(env, n_gpus=8)
    assert runtime.place_rank({}, n_gpus=2) is None


def test_count_gpus_from_nvidia_smi():
    from jittor_sbvsr import runtime
    out = 'GPU 0: NVIDIA A100 (UUID: GPU-1)\nGPU 1: NVIDIA A100 (UUID: GPU-2)\n'
    assert runtime.count_gpus(run=lambda *a, **k: SimpleNamespace(stdout=out)) == 2

    def missing(*a, **k):
        raise FileNotFoundError('nvidia-smi')
    assert runtime.count_gpus(run=missing) == len(os.listdir('/proc/driver/nvidia/gpus')) \
        if os.path.isdir('/proc/driver/nvidia/gpus') else runtime.count_gpus(run=missing) == 0


def test_prepare_places_the_rank_before_jittor(clean_env):
    """Under a launcher with two GPUs, rank 1 sees GPU 1 only, and NCCL (which would fall back to
    MPI with one visible GPU per rank) is not built."""
    monkeypatch = clean_env
    rt = _gpu_box(monkeypatch)
    monkeypatch.setattr(rt, 'count_gpus', lambda: 2)
    monkeypatch.setattr(rt, 'find_system_nccl', lambda: ('/usr/include', '/usr/lib'))
    monkeypatch.setenv('OMPI_COMM_WORLD_LOCAL_RANK', '1')
    monkeypatch.setenv('OMPI_COMM_WORLD_LOCAL_SIZE', '2')
    rt.prepare()
    assert os.environ['CUDA_VISIBLE_DEVICES'] == '1' and os.environ['use_nccl'] == '0'
    assert rt.gpu_placement().startswith('local rank 1 of 2, GPU 1') and rt.ranks_sharing_device() == 1


# --------------------------------------------- a driver without nvcc, TF32 ----

def test_driver_without_nvcc_runs_on_the_cpu_and_refuses_cuda(clean_env, capsys):
    """Jittor would download CUDA 11.2 (and build up to sm_86): nvcc hidden, one line, the fix."""
    monkeypatch = clean_env
    rt = _gpu_box(monkeypatch, nvcc=None)
    rt.prepare()
    assert os.environ['nvcc_path'] == '' and os.environ['FIX_TORCH_ERROR'] == '0'
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and 'no CUDA toolkit (nvcc): running on the CPU' in err[0] and 'nvcc_path' in err[0]
    assert rt.cuda_possible() is False
    fake_jt = SimpleNamespace(has_cuda=False, flags=SimpleNamespace(log_silent=0))
    monkeypatch.setitem(sys.modules, 'jittor', fake_jt)
    with pytest.raises(rt.RuntimeSetupError, match='NVIDIA driver but no CUDA toolkit.*fix: install a CUDA'):
        rt.select_device('cuda')


def test_no_cudnn_means_jittors_own_convolutions_for_every_command(clean_env):
    monkeypatch = clean_env
    rt = _gpu_box(monkeypatch, cudnn=False)
    rt.prepare()
    assert os.environ['conv_opt'] == '1'  # Jittor then skips cuDNN instead of stopping on it


def test_jittor_finds_cudnn_where_it_looks(tmp_path):
    from jittor_sbvsr import runtime
    nvcc = tmp_path / 'cuda' / 'bin' / 'nvcc'
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text('#!/bin/sh\n', encoding='utf-8')
    jt = tmp_path / 'jittor'
    jt.mkdir()
    (jt / 'compile_extern.py').write_text('# as shipped\n', encoding='utf-8')
    if os.path.isfile('/usr/include/cudnn.h'):
        pytest.skip('this machine has cuDNN in /usr/include')
    assert not runtime.jittor_finds_cudnn(str(nvcc), jittor_dir=str(jt))
    (tmp_path / 'cuda' / 'include').mkdir()
    (tmp_path / 'cuda' / 'include' / 'cudnn.h').write_text('', encoding='utf-8')
    (tmp_path / 'cuda' / 'lib64').mkdir()
    (tmp_path / 'cuda' / 'lib64' / 'libcudnn.so.9').write_text('', encoding='utf-8')
    assert runtime.jittor_finds_cudnn(str(nvcc), jittor_dir=str(jt))
    # pip's cuDNN linked into the install: found only once Jittor was changed to look there
    for p in (tmp_path / 'cuda' / 'include' / 'cudnn.h', tmp_path / 'cuda' / 'lib64' / 'libcudnn.so.9'):
        p.unlink()
    venv = tmp_path / 'venv'
    (venv / 'cudnn' / 'include').mkdir(parents=True)
    (venv / 'cudnn' / 'lib').mkdir()
    (venv / 'cudnn' / 'include' / 'cudnn.h').write_text('', encoding='utf-8')
    (venv / 'cudnn' / 'lib' / 'libcudnn.so').write_text('', encoding='utf-8')
    assert not runtime.jittor_finds_cudnn(str(nvcc), prefix=str(venv), jittor_dir=str(jt))
    (jt / 'compile_extern.py').write_text(f'# {runtime.CUDNN_EDIT_MARK}\n', encoding='utf-8')
    assert runtime.jittor_finds_cudnn(str(nvcc), prefix=str(venv), jittor_dir=str(jt))


def test_tf32_is_a_choice(clean_env):
    monkeypatch = clean_env
    rt = _runtime()
    rt.allow_tf32(False)
    assert rt._state['tf32'] is False
    monkeypatch.setenv('NVIDIA_TF32_OVERRIDE', '0')
    rt.allow_tf32(True)
    assert 'NVIDIA_TF32_OVERRIDE' not in os.environ and rt._state['tf32'] is True
    rt = _runtime()
    monkeypatch.setenv('NVIDIA_TF32_OVERRIDE', '0')
    monkeypatch.setitem(sys.modules, 'jittor', SimpleNamespace())
    with pytest.raises(rt.RuntimeSetupError, match='before Jittor is imported'):
        rt.allow_tf32(True)


def test_tf32_flags():
    from jittor_sbvsr.cli.infer import build_parser
    from jittor_sbvsr.cli.train_options import build_parser as train_parser
    assert build_parser().parse_args(['--tf32']).tf32 and not build_parser().parse_args([]).tf32
    assert train_parser().parse_args(['--tf32']).tf32 and not train_parser().parse_args([]).tf32


# ------------------------------------------------------- the memory plan ----

def test_a_4gb_card_plans_1080p_in_at_most_150_tiles():
    """3 GiB free: cuDNN's workspace and the allocator's slack out, the blending on the host."""
    from jittor_sbvsr.infer.memory_plan import plan_window, window_bytes
    from jittor_sbvsr.utils.memory import device_budget
    budget = device_budget(3 * G)
    assert budget == 3 * G - 512 * 2 ** 20 - 256 * 2 ** 20
    p = plan_window(1080, 1920, 'cuda', budget)
    assert 0 < p.tiles <= 150 and p.tile >= 144 and p.peak <= budget and not p.problems
    assert p.host > G  # the float64 blending buffers, counted against host memory
    cpu = plan_window(1080, 1920, 'cpu', budget)
    assert cpu.tiles > p.tiles  # on the CPU the same buffers share the budget
    assert window_bytes(1080, 1920, 200, device='cpu') - window_bytes(1080, 1920, 200, device='cuda') == p.host


def test_540p_fits_whole_where_memory_allows_and_the_untiled_part_is_planned():
    from jittor_sbvsr.infer.memory_plan import plan_window, untiled_bytes
    from jittor_sbvsr.utils.memory import device_budget
    assert plan_window(540, 960, 'cuda', device_budget(16 * G, 24 * G)).tiles == 1
    assert plan_window(540, 960, 'cuda', device_budget(3 * G)).tiles > 1
    tiny = plan_window(1080, 1920, 'cuda', untiled_bytes(1080, 1920) - 1)
    assert len(tiny.problems) == 1 and 'tiles do not shrink them' in tiny.problems[0]
    assert '--device cpu' in tiny.problems[0] and 'downscale the input' in tiny.problems[0]
    host = plan_window(1080, 1920, 'cuda', device_budget(3 * G), host_budget=G)
    assert any('host memory' in p for p in host.problems)


def test_run_budget_on_cuda_is_the_card_less_workspace_and_slack():
    from jittor_sbvsr.infer.memory_plan import run_budget
    from jittor_sbvsr.utils.memory import cudnn_workspace, device_budget
    assert cudnn_workspace(4 * G) == 512 * 2 ** 20 and cudnn_workspace(G) == G // 4
    assert run_budget(3 * G, 0, device='cuda') == device_budget(3 * G) < 3 * G
    assert run_budget(3 * G, 0, device='cpu') == 3 * G


def _frames(folder, h, w, n=5):
    from PIL import Image
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(folder / f'{i:03d}.png')


def test_dry_run_plans_a_4gb_card_without_a_gpu(tmp_path, recipe_pkl):
    _frames(tmp_path / 'lr' / 'clip', 1080, 1920)
    r = subprocess.run([sys.executable, 'inference.py', '--input_path', str(tmp_path / 'lr'), '--model_path',
                        str(recipe_pkl), '--result_path', str(tmp_path / 'out'), '--device', 'cuda',
                        '--max_memory', '3G', '--dry_run'], cwd=ROOT, capture_output=True, text=True,
                       encoding='utf-8', timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert 'device: cuda; a GPU with 3.0 GiB free (--max_memory)' in out and 'frames: 1080x1920 LR' in out
    tiles = int(out.split(' tile(s) per window')[0].rsplit(', ', 1)[1])
    assert 1 < tiles <= 150, out
    assert 'estimated peak:' in out and 'of host memory (tile blending)' in out
    assert not (tmp_path / 'out').exists()  # nothing written, the network never ran


# ---------------------------------------------------- ranks that agree ----

def test_rank0_decides_the_budget(monkeypatch):
    from jittor_sbvsr import dist
    sent = []
    monkeypatch.setattr(dist, 'world_size', lambda: 2)
    monkeypatch.setattr(dist, 'rank', lambda: 1)
    monkeypatch.setattr(dist, 'broadcast_text', lambda text: sent.append(text) or '123456789')

    def free():
        raise AssertionError('rank 1 must not read its own free memory')
    assert dist.decided_by_rank0(free) == 123456789 and sent == ['None']
    monkeypatch.setattr(dist, 'rank', lambda: 0)
    monkeypatch.setattr(dist, 'broadcast_text', lambda text: text)
    assert dist.decided_by_rank0(lambda: 42) == 42 and dist.decided_by_rank0(lambda: None) is None


@pytest.mark.parametrize('device,share,local,divided', [('cuda', 1, 4, 1), ('cuda', 2, 4, 2), ('cpu', 1, 4, 4)])
def test_accumulate_auto_divides_only_where_ranks_share(monkeypatch, device, share, local, divided):
    from jittor_sbvsr import runtime
    from jittor_sbvsr.trainer import micro
    seen = []
    monkeypatch.setattr(runtime, 'ranks_sharing_device', lambda: share)
    monkeypatch.setattr(runtime, 'local_size', lambda env=None: local)
    monkeypatch.setattr(micro, 'default_budget', lambda dev, processes: seen.append((dev, processes)) or 8 * G)
    monkeypatch.setattr(micro.dist, 'decided_by_rank0', lambda fn: fn())
    assert micro.training_budget(None, device) == 8 * G and seen == [(device, divided)]
    assert micro.training_budget(3 * G, 'cuda') < 3 * G == micro.training_budget(3 * G, 'cpu')


# ---------------------------------------------- evaluation during training ----

def test_evaluation_tiles_like_inference(public_case):
    """A budget too small for whole frames: the val outputs come from tiles, close to whole frames."""
    import jittor_sbvsr  # noqa: F401 (prepare() before Jittor)
    import jittor as jt
    from jittor_sbvsr.data.folders import list_videos
    from jittor_sbvsr.data.images import read_frame
    from jittor_sbvsr.data.windows import frames_to_input
    from jittor_sbvsr.infer.memory_plan import window_bytes
    from jittor_sbvsr.models import PWC_Recons
    from jittor_sbvsr.trainer import evaluate as ev
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=1)
    _, paths = list_videos(public_case / 'LR')[0]
    x = jt.array(frames_to_input([read_frame(p) for p in paths[:5]]))
    notes = []
    tiles = ev._tiles((32, 48), window_bytes(32, 48, 40, keep_features=False), notes.append)
    assert len(tiles) > 1 and len(notes) == 1 and 'tiles of' in notes[0]
    assert len(ev._tiles((32, 48), None, notes.append)) == 1
    with jt.no_grad():
        whole = {k: v.numpy() for k, v in net({'x': x, 'mode': 'val'})[0].items()}
        tiled = {k: v.numpy() for k, v in ev._val_tiled(net, x, tiles).items()}
    assert set(whole) == set(tiled)
    for k in ('input', 'input_down', 'recons_down', 'est_kernel'):  # whole-frame parts: the same
        assert np.abs(whole[k] - tiled[k]).max() < 1e-5, k
    for k in ('recons', 'input_cycle'):
        assert np.abs(whole[k] - tiled[k]).max() < 0.05, k


def test_evaluation_out_of_memory_gets_a_hint_that_can_help(monkeypatch):
    from jittor_sbvsr.errors import UserError
    from jittor_sbvsr.trainer import trainer as tr
    t = object.__new__(tr.Trainer)
    t.args = SimpleNamespace(save_images=False, data_test='x', max_memory=None)
    t.model = t.test_set = t.watchdog = None
    t.device, t.eval_budget, t.log = 'cpu', 123, print

    def oom(*a, **k):
        raise RuntimeError('[f] CUDA error: out of memory')
    monkeypatch.setattr(tr, 'evaluate', oom)
    with pytest.raises(UserError, match='evaluation.*smaller --max_memory') as e:
        t.evaluate()
    assert 'batch_size' not in str(e.value)


def test_cudnn_search_workspace_is_capped_at_what_the_plan_sets_aside(monkeypatch):
    from jittor_sbvsr import runtime
    from jittor_sbvsr.utils import memory
    ratios = []
    fake_jt = SimpleNamespace(cudnn=SimpleNamespace(set_max_workspace_ratio=ratios.append))
    monkeypatch.setattr(memory, 'cuda_memory', lambda: (3 * G, 4 * G))
    runtime._cap_cudnn_workspace(fake_jt)
    monkeypatch.setattr(memory, 'cuda_memory', lambda: (70 * G, 80 * G))
    runtime._cap_cudnn_workspace(fake_jt)
    runtime._cap_cudnn_workspace(SimpleNamespace(cudnn=None))  # no cuDNN: nothing to cap
    assert ratios == [0.125, 512 / (80 * 1024)]

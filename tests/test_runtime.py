"""Jittor's set-up (jittor_sbvsr/runtime.py) and the oneDNN convolution path.

The prepare() tests load runtime.py on its own (the package __init__ would
call prepare() for real) and fake the machine: no oneDNN, no CUDA driver.
What the commands make of an unusable installation: tests/test_packaging.py.
"""
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BROKEN_INSTALLS, posix_only, run_child

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / 'jittor_sbvsr' / 'runtime.py'


def _standalone_runtime():
    """A fresh copy of runtime.py, not the package's (whose state is set)."""
    spec = importlib.util.spec_from_file_location('_sbvsr_runtime_standalone', RUNTIME)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------ prepare(), no jittor ----

def test_prepare_without_onednn_or_cuda(clean_env, capsys):
    monkeypatch = clean_env
    rt = _standalone_runtime()
    monkeypatch.setattr(rt, 'onednn_installed', lambda d=None: False)
    monkeypatch.setattr(rt, 'cuda_driver_present', lambda: False)
    rt.prepare()
    assert os.environ['use_mkl'] == '0'
    assert os.environ['nvcc_path'] == ''
    assert rt.onednn_enabled() is False
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert 'warning' in lines[0] and 'oneDNN' in lines[0]
    rt.prepare()  # idempotent: no second warning
    assert capsys.readouterr().err == ''


def test_prepare_keeps_an_explicit_nvcc_path_and_installed_onednn(clean_env, capsys):
    monkeypatch = clean_env
    rt = _standalone_runtime()
    monkeypatch.setattr(rt, 'onednn_installed', lambda d=None: True)
    monkeypatch.setattr(rt, 'cuda_driver_present', lambda: False)
    monkeypatch.setenv('nvcc_path', '/opt/cuda/bin/nvcc')
    rt.prepare()
    assert 'use_mkl' not in os.environ
    assert os.environ['nvcc_path'] == '/opt/cuda/bin/nvcc'
    assert rt.onednn_enabled() is True
    assert capsys.readouterr().err == ''


def test_prepare_with_cuda_keeps_tf32_off_and_downloads_away(clean_env):
    monkeypatch = clean_env
    rt = _standalone_runtime()
    monkeypatch.setattr(rt, 'onednn_installed', lambda d=None: True)
    monkeypatch.setattr(rt, 'cuda_driver_present', lambda: True)
    monkeypatch.setattr(rt, 'find_system_nccl', lambda: None)
    monkeypatch.setattr(rt, 'find_nvcc', lambda: '/usr/local/cuda/bin/nvcc')
    monkeypatch.setattr(rt, 'jittor_finds_cudnn', lambda nvcc: True)
    rt.prepare()
    assert 'nvcc_path' not in os.environ  # Jittor finds nvcc itself
    assert os.environ['FIX_TORCH_ERROR'] == '0' and 'conv_opt' not in os.environ
    assert os.environ['NVIDIA_TF32_OVERRIDE'] == '0'
    assert os.environ['use_cutt'] == '0' and os.environ['use_nccl'] == '0'
    # a user's own choice stays
    rt = _standalone_runtime()
    monkeypatch.setattr(rt, 'onednn_installed', lambda d=None: True)
    monkeypatch.setattr(rt, 'cuda_driver_present', lambda: True)
    monkeypatch.setattr(rt, 'find_nvcc', lambda: '/usr/local/cuda/bin/nvcc')
    monkeypatch.setenv('NVIDIA_TF32_OVERRIDE', '1')
    rt.prepare()
    assert os.environ['NVIDIA_TF32_OVERRIDE'] == '1'


def test_prepare_without_cuda_leaves_gpu_settings_alone(clean_env):
    monkeypatch = clean_env
    rt = _standalone_runtime()
    monkeypatch.setattr(rt, 'onednn_installed', lambda d=None: True)
    monkeypatch.setattr(rt, 'cuda_driver_present', lambda: False)
    rt.prepare()
    assert not {'NVIDIA_TF32_OVERRIDE', 'use_cutt', 'use_nccl'} & set(os.environ)


def test_check_numpy_refuses_numpy_2(monkeypatch):
    rt = _standalone_runtime()
    import numpy
    monkeypatch.setattr(numpy, '__version__', '2.1.0')
    with pytest.raises(rt.RuntimeSetupError, match=r'numpy 2\.1\.0.*numpy<2'):
        rt.check_numpy()
    monkeypatch.setattr(numpy, '__version__', '1.26.4')
    rt.check_numpy()


def test_prepare_checks_again_after_a_failure(clean_env):
    """Done only once it has succeeded: an import retried after an InstallationError fails again."""
    monkeypatch = clean_env
    rt = _standalone_runtime()
    monkeypatch.setattr(rt, 'onednn_installed', lambda d=None: True)
    monkeypatch.setattr(rt, 'cuda_driver_present', lambda: False)
    import numpy
    monkeypatch.setattr(numpy, '__version__', '2.1.0')
    for _ in range(2):
        with pytest.raises(rt.InstallationError, match='numpy 2.1.0'):
            rt.prepare()
    monkeypatch.setattr(numpy, '__version__', '1.26.4')
    rt.prepare()
    monkeypatch.setattr(numpy, '__version__', '2.1.0')
    rt.prepare()  # done: not checked again


_IMPORT_TWICE = """
import sys
for attempt in range(2):
    try:
        import jittor_sbvsr
    except ImportError as e:
        runtime = sys.modules['jittor_sbvsr.runtime']
        print(type(e).__name__, isinstance(e, runtime.RuntimeSetupError), 'jittor' in sys.modules, e)
    else:
        print('imported')
"""


@pytest.mark.parametrize('cause', sorted(BROKEN_INSTALLS))
def test_library_import_raises_on_an_unusable_installation(cause, broken_install):
    """``import jittor_sbvsr`` raises an ImportError naming the problem (again when retried),
    prints nothing, exits nothing, and has not imported Jittor."""
    env = dict(os.environ, **broken_install(cause))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [env.get('PYTHONPATH'), str(ROOT)]))
    r = run_child([sys.executable, '-c', _IMPORT_TWICE], cwd=str(ROOT), env=env, capture_output=True,
                  text=True, timeout=120, encoding='utf-8')
    assert r.returncode == 0 and r.stderr == '', r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], r.stdout
    assert lines[0].startswith('InstallationError True False ') and BROKEN_INSTALLS[cause] in lines[0]


def test_import_in_a_fresh_process():
    """nvcc without libcuda and no network: the import works quietly, with oneDNN."""
    env = dict(os.environ, PYTHONPATH=str(ROOT),
               http_proxy='http://127.0.0.1:9', https_proxy='http://127.0.0.1:9')  # any download fails
    for k in ('use_mkl', 'nvcc_path'):
        env.pop(k, None)
    code = ('import jittor_sbvsr, jittor, jittor_sbvsr.runtime as rt; '
            'print(jittor.compile_extern.mkl_ops is not None, rt.onednn_enabled(), jittor.flags.use_cuda)')
    r = run_child([sys.executable, '-c', code], cwd=str(ROOT), env=env, capture_output=True, text=True,
                  timeout=600, encoding='utf-8')
    assert r.returncode == 0, r.stderr
    assert 'Traceback' not in r.stderr and 'Downloading' not in r.stderr, r.stderr
    import jittor_sbvsr.runtime as rt
    if rt.onednn_installed():
        assert r.stdout.split() == ['True', 'True', '0'], (r.stdout, r.stderr)
    else:
        assert 'warning: oneDNN is not installed' in r.stderr


# --------------------------------------------------- with jittor ----------

_CHILD_KILLED = """
import signal, subprocess, sys, time
import jittor_sbvsr
from jittor_sbvsr import runtime
import jittor
if sys.argv[1] == 'ours':
    runtime.select_device('cpu')
p = subprocess.Popen(['sleep', '30'])
p.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C reaches a compiler Jittor started
p.wait()
time.sleep(0.5)
print('still running', p.returncode)
"""


@posix_only('SIGCHLD, and a sleep program killed by SIGINT')
@pytest.mark.parametrize('handlers', ['jittor', 'ours'])
def test_a_child_killed_by_ctrl_c_does_not_end_the_process(handlers):
    """Jittor's SIGCHLD handler quick-exits (code 1, 'Caught SIGCHLD. Maybe out of memory') when any
    child dies of a signal; after select_device (runtime.python_sigint) the process carries on."""
    r = run_child([sys.executable, '-c', _CHILD_KILLED, handlers], cwd=str(ROOT), capture_output=True,
                  text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)), encoding='utf-8')
    if handlers == 'jittor':  # the premise: without the runtime's handlers, the process dies
        assert r.returncode == 1 and 'Caught SIGCHLD' in r.stderr, (r.returncode, r.stderr[-2000:])
    else:
        assert r.returncode == 0 and 'still running -2' in r.stdout, r.stderr[-2000:]
        assert 'SIGCHLD' not in r.stderr


@posix_only('SIGINT to a process group (os.killpg)')
def test_ctrl_c_exit_does_not_hang_on_jittors_compiler_pool(tmp_path):
    """Ctrl-C to the whole process group kills Jittor's idle compiler workers too; one that dies
    holding the pool's queue lock made the exit wait for ever (runtime.abandon_compile_pool)."""
    code = ('import os, signal, sys, time\n'
            'from jittor_sbvsr.cli import guarded\n'
            'from jittor_sbvsr import runtime\n'
            'def work():\n'
            '    runtime.select_device("cpu")\n'
            '    time.sleep(1)\n'
            '    os.killpg(os.getpgid(0), signal.SIGINT)\n'
            '    time.sleep(30)\n'
            'sys.exit(guarded(work))\n')
    r = run_child([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=120,
                  env=dict(os.environ, PYTHONPATH=str(ROOT)), start_new_session=True, encoding='utf-8')
    assert r.returncode == 130, r.stderr[-2000:]
    assert [ln for ln in r.stderr.splitlines() if 'interrupted' in ln] == [
        'interrupted (Ctrl-C): the files written so far are complete, none is half-written']

def test_select_device_cuda_without_cuda():
    import jittor_sbvsr  # noqa: F401
    import jittor as jt
    from jittor_sbvsr.runtime import RuntimeSetupError, select_device
    if jt.has_cuda:
        pytest.skip('this machine has CUDA')
    with pytest.raises(RuntimeSetupError, match='--device cuda.*no usable CUDA'):
        select_device('cuda')
    with pytest.raises(RuntimeSetupError, match='unknown device'):
        select_device('tpu')
    assert select_device('auto') == 'cpu'
    assert jt.flags.use_cuda == 0


def test_onednn_is_loaded():
    import jittor_sbvsr  # noqa: F401
    from jittor_sbvsr import runtime
    import jittor as jt
    assert runtime.onednn_installed(), f'oneDNN missing in {runtime.onednn_dir()}: run env/setup.sh'
    assert jt.compile_extern.mkl_ops is not None
    assert runtime.onednn_enabled()


def _kernels(fn):
    """Names of the kernels one evaluation of fn() runs (Jittor's profiler)."""
    import jittor as jt
    jt.sync_all(True)
    jt.profiler.start(0, 0)
    try:
        fn().sync()
        jt.sync_all(True)
    finally:
        jt.profiler.stop()
    return [row[0].split('\u00ab')[0] for row in jt.profiler.report()[1:]]


def _best_time(fn, n):
    import jittor as jt
    fn().sync()
    best = float('inf')
    for _ in range(n):
        jt.sync_all(True)
        t0 = time.perf_counter()
        fn().sync()
        jt.sync_all(True)
        best = min(best, time.perf_counter() - t0)
    return best


def test_convolutions_run_in_onednn():
    """A Conv2d runs as a ``mkl_conv`` kernel, and much faster than Jittor's generic conv.

    Jittor writes a convolution as reindex * broadcast -> sum; its conv tuner
    replaces that fused kernel by ``mkl_conv`` (oneDNN). With the tuner off
    the generic loop nest runs: same numbers, a lot slower. The generic case
    pads the input explicitly (padding (1, 0) instead of (1, 1)) so that its
    fused kernel is new to this process (Jittor caches kernels by key).
    """
    import jittor_sbvsr  # noqa: F401
    import jittor as jt
    from jittor import nn
    rng = np.random.RandomState(0)
    xn = rng.rand(1, 64, 48, 48).astype(np.float32)
    x = jt.array(xn)
    xp = jt.array(np.pad(xn, ((0, 0), (0, 0), (0, 0), (1, 1))))
    conv = nn.Conv2d(64, 64, 3, padding=1)
    w, b = conv.weight, conv.bias

    def fast():
        return conv(x)

    def generic():
        return nn.conv2d(xp, w, b, 1, (1, 0), 1)

    assert 'mkl_conv' in _kernels(fast)
    t_fast = _best_time(fast, 5)
    y_fast = fast().numpy()
    old = jt.flags.enable_tuner
    jt.flags.enable_tuner = 0
    try:
        assert 'mkl_conv' not in _kernels(generic)
        t_gen = _best_time(generic, 2)
        y_gen = generic().numpy()
    finally:
        jt.flags.enable_tuner = old
    assert np.abs(y_fast - y_gen).max() <= 1e-4
    # ~40x on an idle 2-core box; 3x leaves room for a busy one
    assert t_gen > 3 * t_fast, (t_fast, t_gen)

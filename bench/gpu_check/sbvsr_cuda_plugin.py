"""pytest plugin (GPU check only): run the whole test session with Jittor on CUDA,
selected the way the project's CLIs do it (runtime.select_device). Load with
`-p sbvsr_cuda_plugin` and bench/gpu_check on PYTHONPATH. SBVSR_TEST_DEVICE=cpu to try it here."""
import os
import sys


def pytest_configure(config):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root not in sys.path:
        sys.path.insert(0, root)
    from jittor_sbvsr import runtime
    dev = runtime.select_device(os.environ.get('SBVSR_TEST_DEVICE', 'cuda'))
    import jittor as jt
    print(f'\n[sbvsr_cuda_plugin] select_device -> {dev}; {runtime.describe()}; '
          f'use_tensorcore={getattr(jt.flags, "use_tensorcore", None)}; '
          f'NVIDIA_TF32_OVERRIDE={os.environ.get("NVIDIA_TF32_OVERRIDE")}', flush=True)

"""What the benchmarks share: the machine's description, peak memory and CPU time, the recipe
weights (weights/recipe.py: no downloads), and the one JSON result each prints.

The benchmarks are scripts in this folder; each imports this module from beside it.
"""
import json
import os
import platform
import resource
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # after a checkout the caller put first (whole_run.py --package)


def machine():
    model = ''
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as fh:
            for line in fh:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    return {'nproc': os.cpu_count(), 'cpu_model': model, 'platform': platform.platform(),
            'python': platform.python_version(), 'loadavg_at_start': load}


def peak_rss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / 1024.0 if sys.platform != 'darwin' else r / 2 ** 20, 1)


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def recipe_net():
    """The published configuration with the recipe weights (Jittor)."""
    from jittor_sbvsr.weights.recipe import recipe_state
    from jittor_sbvsr.models import PWC_Recons
    net = PWC_Recons()
    net.load_parameters(recipe_state({k: v.shape for k, v in net.state_dict().items()}, seed=1234))
    return net


def save_recipe(path):
    """The recipe weights as a .pkl checkpoint at ``path`` (for the command line)."""
    from jittor_sbvsr.weights.checkpoint import save_state_atomic
    from jittor_sbvsr.weights.recipe import recipe_state
    from jittor_sbvsr.models import PWC_Recons
    save_state_atomic(recipe_state({k: v.shape for k, v in PWC_Recons().state_dict().items()}, seed=1234), path)
    return path


def emit(res, path=None):
    """Print the result as JSON, and write it to ``path`` too if given."""
    text = json.dumps(res, indent=1)
    print(text)
    if path:
        with open(path, 'w', encoding='utf-8') as fh:
            fh.write(text + '\n')

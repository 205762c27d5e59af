"""``python -m jittor_sbvsr.cli.doctor`` (``sbvsr-doctor``): what this machine will run, and why, on one screen.

Why: whether a run uses the GPU, oneDNN or the fused paths is decided by a
dozen things (driver, toolkit, Jittor's sm cap, a oneDNN folder, a
self-check...), each silent when it goes wrong. :func:`gather` asks the
machine (each question on its own, none can stop the others);
:func:`diagnose` turns the answers into lines, and each problem into one
line with its fix, without touching the machine, so tests fake any machine
by handing it other facts. Changes nothing: reading Jittor's files shows
whether tools/jittor_cuda_patch.py has run. Exit code 0 when the device a
run would use works, 1 when it does not.
"""
import locale
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

from .. import runtime
from ..utils.memory import host_memory

PYTHONS = ((3, 11), (3, 12))  # what the pinned numpy, scipy and scikit-image have wheels for
MARKER = 'jittor-sbvsr'  # what tools/jittor_cuda_patch.py writes into each file it changes
SETUP = 'rerun the set-up (python env/setup.py; on Windows py -3.11 env\\setup.py)'


def _run(cmd, timeout=30):
    """stdout of ``cmd``, or None when it cannot run."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, encoding='utf-8', errors='replace',
                           timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def gpus():
    """[{name, arch, free_mib, total_mib}] from nvidia-smi (Linux, WSL2, Windows), [] without it."""
    out = _run(['nvidia-smi', '--query-gpu=name,compute_cap,memory.free,memory.total',
                '--format=csv,noheader,nounits']) or ''
    found = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(',')]
        if len(parts) == 4:
            cap = parts[1].replace('.', '')
            found.append({'name': parts[0], 'arch': int(cap) if cap.isdigit() else None,
                          'free_mib': int(parts[2]) if parts[2].isdigit() else None,
                          'total_mib': int(parts[3]) if parts[3].isdigit() else None})
    return found


def cuda_changes(jittor_dir, cuda=None):
    """(the highest sm Jittor builds for CUDA ``cuda``, whether jittor_cuda_patch changed it), read from
    Jittor's compiler.py: ``max_arch = 89``, or the tool's ``max_arch = 120 if nvcc_version >= [12, 8]
    else ... else 89``; below CUDA 11.8 Jittor lowers it itself (86, 80, 75)."""
    try:
        with open(os.path.join(jittor_dir, 'compiler.py'), encoding='utf-8', errors='replace') as f:
            line = next((ln for ln in f if re.match(r'\s*max_arch = \d', ln)), '')
    except OSError:
        return None, False
    cuda = tuple(cuda or (0, 0))[:2]
    steps = [((int(a), int(b)), int(cap)) for cap, a, b in
             re.findall(r'(\d+) if nvcc_version >= \[(\d+), *(\d+)\]', line)]
    last = re.findall(r'(\d+)(?:\s*#.*)?\s*$', line)
    cap = next((c for v, c in steps if cuda >= v), int(last[0]) if last else None)
    for below, own in (((11, 0), 75), ((11, 1), 80), ((11, 8), 86)):
        if cap and cuda < below:
            cap = min(cap, own)
            break
    return cap, MARKER in line


def _device_works(jt, np):
    """A 3x3 convolution on the selected device against numpy; None when it matches, else why."""
    rs = np.random.RandomState(0)
    x, w = rs.standard_normal((1, 2, 6, 7)).astype(np.float32), rs.standard_normal((3, 2, 3, 3)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((1, 3, 6, 7))
    for i in range(3):
        for j in range(3):
            ref += np.einsum('oc,nchw->nohw', w[:, :, i, j], xp[:, :, i:i + 6, j:j + 7])
    got = jt.nn.conv2d(jt.array(x), jt.array(w), None, 1, 1).numpy()
    err = float(np.abs(got - ref).max())
    return None if err < 1e-4 else f'a 3x3 convolution differs from numpy by {err:.1e}'


def _fast_paths():
    """What InferenceNet's self-checks make of the model's fast paths (random weights, small probes)."""
    from ..models import PWC_Recons
    from ..models.deploy import InferenceNet
    net = PWC_Recons()
    net.eval()
    # a failed check turns its path off and says so in .paths (the warning line would repeat it)
    return dict(InferenceNet(net, warn=lambda line: None).paths)


def gather():
    """The facts about this machine that :func:`diagnose` reads."""
    f = {'os': platform.platform(), 'windows': os.name == 'nt', 'wsl': False,
         'python': (sys.version_info[:2], platform.python_version(), sys.executable),
         'driver': runtime.cuda_driver(), 'gpus': gpus(), 'temp': tempfile.gettempdir(),
         'onednn_dir': runtime.onednn_dir(), 'onednn_installed': runtime.onednn_installed(),
         'mpirun': shutil.which('mpirun'), 'memory': host_memory(),
         'cache': os.path.join(runtime.jittor_home(), '.cache', 'jittor')}  # Jittor's, once it has started
    if f['windows']:
        f['codepage'] = locale.getencoding()  # the ANSI code page ('cp936' on a Chinese Windows), UTF-8 mode or not
        f['vc_missing'] = runtime.vc_runtime_missing(dirs=[runtime.jittor_msvc_bin()])
    try:
        with open('/proc/version', encoding='utf-8', errors='replace') as v:
            f['wsl'] = 'microsoft' in v.read().lower()
    except OSError:
        pass
    f.update(_gpu_facts())
    if f['mpirun']:
        f['mpi_version'] = ((_run([f['mpirun'], '--version']) or '').splitlines() or [''])[0]
    try:
        import imageio_ffmpeg
        f['ffmpeg'] = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # noqa: BLE001 (missing package, missing binary: both mean no video)
        f['ffmpeg_error'] = f'{type(e).__name__}: {e}'
    try:
        runtime.quiet_jittor()
        f['device'] = runtime.select_device('auto')
        import jittor as jt
        import jittor_utils
        import numpy as np
        try:
            cc_version = jittor_utils.get_version(jittor_utils.cc_path).strip('()')
        except Exception:  # noqa: BLE001 (the version is only shown)
            cc_version = '?'
        f.update(jittor=jt.__version__, cc=(f'{jittor_utils.cc_type} {cc_version}', jittor_utils.cc_path),
                 cache=jittor_utils.cache_path, nvcc=jt.compiler.nvcc_path or None,
                 cuda=tuple(jt.compiler.nvcc_version) if getattr(jt.compiler, 'nvcc_version', None) else None,
                 cudnn=jt.compile_extern.cudnn is not None, onednn_enabled=runtime.onednn_enabled())
        f['max_arch'], f['cuda_patched'] = cuda_changes(os.path.dirname(jt.__file__), f['cuda'])
        f['device_error'] = _device_works(jt, np)
    except Exception as e:  # noqa: BLE001 (Jittor failing to start is the answer here)
        f['device_error'] = f'Jittor failed to start: {runtime.error_line(e)[7:]}'
        return f
    if f['device'] == 'cpu' and f['onednn_enabled']:
        try:
            from ..ops import fused_conv
            f['isa'] = fused_conv.onednn_isa()
            f['fused'] = _fast_paths()
        except Exception as e:  # noqa: BLE001
            f['fused_error'] = f'{type(e).__name__}: {e}'
    return f


def _gpu_facts():
    """What stands between Jittor and the GPU, asked without starting CUDA: a driver without nvcc
    (runtime.py then hides it), the host g++ against nvcc, cuDNN where Jittor looks and from pip,
    and under mpirun how many ranks share this rank's GPU."""
    import glob
    import sysconfig
    nvcc = runtime.find_nvcc()
    f = {'no_toolkit': bool(runtime.cuda_driver()) and not nvcc and os.name != 'nt' and not runtime.jtcuda_installed(),
         'gcc': runtime.gcc_major(), 'nvcc_found': nvcc, 'mpi_share': runtime.ranks_sharing_device(),
         'gpu_placement': runtime.gpu_placement(), 'cudnn_visible': bool(nvcc) and runtime.jittor_finds_cudnn(nvcc),
         'pip_cudnn': next((d for sp in {sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']}
                            for d in [os.path.join(sp, 'nvidia', 'cudnn')]
                            if glob.glob(os.path.join(d, 'lib', 'libcudnn.so*'))), None)}
    if nvcc:
        out = _run([nvcc, '--version']) or ''
        m = re.search(r'release (\d+)\.(\d+)', out)
        f['nvcc_release'] = (int(m.group(1)), int(m.group(2))) if m else None
    return f


def _gib(n):
    return f'{n / 2 ** 30:.1f} GiB'


def diagnose(f):
    """(lines, problems, exit code) for the facts ``f`` (:func:`gather`'s, or a test's)."""
    lines, problems = [], []
    add = lambda key, text: lines.append(f'{key:<11}{text}')  # noqa: E731
    add('OS', f['os'] + (' (WSL2)' if f.get('wsl') else ''))
    (ver, full, exe) = f['python']
    add('Python', f'{full} ({exe})')
    if ver not in PYTHONS:
        problems.append(f'Python {full}: the pinned packages have wheels for Python 3.11 and 3.12 only; '
                        f'fix: make the venv with Python 3.11 ({SETUP})')
    if f.get('jittor'):
        cc_type, cc_path = f['cc']
        add('Jittor', f'{f["jittor"]}, compiler {cc_type} ({cc_path})')
        if f['jittor'] != runtime.PINNED_JITTOR:
            problems.append(f'Jittor {f["jittor"]} is installed, this project runs on {runtime.PINNED_JITTOR}; '
                            'fix: pip install -r env/jittor-1.3.8.5.txt')
    add('cache', f['cache'] + (f' (code page {f["codepage"]})' if f.get('codepage') else ''))
    for what, path in (("Jittor's cache", f['cache']), ('the temporary folder', f.get('temp'))):
        why = _path_problem(path, f.get('codepage')) if f['windows'] and path else None
        if why:
            problems.append(f'{what} {path} {why}; fix: set ' + ('JITTOR_HOME' if 'cache' in what else 'TEMP and TMP')
                            + ' to a folder with an ASCII name (e.g. C:\\jittor)')
    if f.get('vc_missing'):
        problems.append(f'the Visual C++ 2015-2022 redistributable is missing ({", ".join(f["vc_missing"])} not '
                        "found): Jittor's compiled code and oneDNN need it (oneDNN is turned off without it); "
                        f'fix: {runtime.VC_REDIST_FIX}')
    _cuda(f, add, problems)
    if f['onednn_installed']:
        isa = f', ISA {f["isa"]}' if f.get('isa') else ''
        on = 'on' if f.get('onednn_enabled') else 'installed but off (use_mkl=0, or see the warning above)'
        add('oneDNN', f'2.2 in {f["onednn_dir"]}{isa}: {on}')
    else:
        add('oneDNN', f'not installed (looked in {f["onednn_dir"]})')
        problems.append(f'oneDNN is not installed in {f["onednn_dir"]}: CPU convolutions are ~80x slower; '
                        f'fix: {SETUP}')
    if f.get('fused'):
        add('fast paths', '; '.join(f'{k}: {v}' for k, v in f['fused'].items()))
        problems += [f'{k} {v}; the run falls back to the plain path (--no_fused skips the check)'
                     for k, v in f['fused'].items() if v.startswith('failed')]
    elif f.get('fused_error'):
        add('fast paths', f'not checked: {f["fused_error"]}')
    elif f.get('jittor'):
        add('fast paths', 'not used (they need the CPU with oneDNN)')
    add('Open MPI', f'{f.get("mpi_version") or "mpirun"} ({f["mpirun"]})' if f['mpirun']
        else 'not found (only multi-process runs under mpirun need it)')
    if f.get('ffmpeg'):
        add('ffmpeg', f['ffmpeg'])
    else:
        add('ffmpeg', f'not found ({f.get("ffmpeg_error", "")})')
        problems.append('no ffmpeg: video files can be neither read nor written (frame folders work); '
                        'fix: pip install -r env/jittor-1.3.8.5.txt (it brings imageio-ffmpeg)')
    if f.get('memory'):
        avail, total = f['memory']
        add('memory', f'{_gib(avail)} free of {_gib(total)}')
        if avail < 2 ** 31:
            problems.append(f'only {_gib(avail)} of memory free; fix: --tile 128 reconstructs in tiles')
    works = 'device_error' in f and f['device_error'] is None
    device = f.get('device', 'none')
    add('device', f'{device}: ' + ('works (a 3x3 convolution matches numpy)' if works
                                   else f'does not work: {f.get("device_error")}'))
    if not works:
        problems.append(f'the {device} device does not work: {f.get("device_error")}; '
                        'fix: see the lines above (sbvsr-doctor), or --device cpu')
    return lines, problems, 0 if works else 1


def _path_problem(path, codepage):
    """Why a Windows path may not work for Jittor's compilers (MSVC, nvcc), or None: a non-ASCII
    path is read by them in the ANSI code page, unless that is UTF-8 (65001)."""
    if path.isascii() or (codepage or '').lower().replace('-', '').replace('_', '') in ('utf8', 'cp65001'):
        return None
    cp = codepage or 'unknown'
    try:
        path.encode(cp)
    except (LookupError, UnicodeEncodeError):
        return (f'is not ASCII and cannot be written in Windows\' code page ({cp}): the compilers, which '
                'read paths in it, cannot open it')
    return (f'is not ASCII and Windows\' code page is {cp}, not UTF-8: the compilers read paths in it, and '
            'may not find it')


def _gpu_problem(g, cap, cuda, f):
    """Whether the machine code Jittor builds (sm_<min(arch, cap)>, no PTX) runs on GPU ``g``, and if
    not, what will: machine code runs on GPUs of its major architecture and the same or a later
    minor one (sm_86 code on an sm_89 RTX 40xx), not on another major one (sm_89 on sm_90)."""
    arch = g['arch']
    built = min(arch, cap)
    if arch // 10 == built // 10:
        return None
    need = '12.9' if arch >= 121 else '12.8' if arch >= 100 else '11.8'
    own = 'jtcuda' in (f.get('nvcc') or '')  # the CUDA 11.2 Jittor downloads (on Windows unless nvcc_path is set)
    if not f.get('cuda_patched') and not own and tuple(f.get('cuda') or (0, 0)) >= tuple(map(int, need.split('.'))):
        fix = 'python tools/jittor_cuda_patch.py (the set-up runs it)'
    else:
        fix = (f'install CUDA {need} or newer and set nvcc_path to its nvcc, then rerun the set-up '
               '(tools/jittor_cuda_patch.py raises Jittor\'s cap for it); or --device cpu')
    where = "Jittor's own CUDA 11.2" if own else f'CUDA {".".join(map(str, cuda[:2])) if cuda else "?"}'
    return (f'{g["name"]} is sm_{arch}, but {where} builds Jittor\'s kernels for sm_{built} at most, machine code '
            f'that a GPU of another major architecture cannot run; fix: {fix}')


def _cuda(f, add, problems):
    """The CUDA lines: driver, toolkit, GPUs against Jittor's sm cap, cuDNN, the CUDA changes."""
    names = ' or '.join(runtime.CUDA_DRIVERS['nt' if f['windows'] else 'posix'])
    if not f['driver']:
        add('CUDA', f'no NVIDIA driver ({names} does not load): runs on the CPU')
        if f['gpus']:
            problems.append(f'nvidia-smi lists {f["gpus"][0]["name"]}, but {names} does not load: the GPU '
                            'is not used; fix: reinstall the NVIDIA driver (WSL2: the Windows one, not a Linux one)')
        return
    if not f.get('nvcc'):
        add('CUDA', f'driver {f["driver"]}, no CUDA toolkit (nvcc): runs on the CPU'
            + (" (nvcc hidden from Jittor, which would download its own CUDA 11.2)" if f.get('no_toolkit') else ''))
        problems.append('an NVIDIA driver but no nvcc: Jittor compiles its GPU kernels with it, so runs use '
                        f'the CPU; fix: {runtime.NO_NVCC_FIX}')
        _host_compiler(f, problems)
        return
    cuda = '.'.join(map(str, f['cuda'][:2])) if f.get('cuda') else '?'
    changed = 'changed by tools/jittor_cuda_patch.py' if f.get('cuda_patched') else 'unchanged'
    cap = f.get('max_arch')
    add('CUDA', f'driver {f["driver"]}, toolkit {cuda} ({f["nvcc"]}), cuDNN '
        f'{"loaded" if f.get("cudnn") else "not found"}; Jittor builds up to sm_{cap} ({changed})')
    for g in f['gpus']:
        mem = f', {g["free_mib"]} MiB free of {g["total_mib"]}' if g.get('total_mib') else ''
        add('GPU', f'{g["name"]}, sm_{g["arch"]}{mem}')
        gpu_problem = _gpu_problem(g, cap, f.get('cuda'), f) if cap and g['arch'] else None
        if gpu_problem:
            problems.append(gpu_problem)
        if g.get('total_mib') and g['total_mib'] < 6000:
            problems.append(f'{g["name"]} has {g["total_mib"]} MiB: whole frames may not fit; fix: --tile 128')
    if f.get('cuda') and f['cuda'][0] >= 13 and not f.get('cuda_patched'):
        problems.append(f'CUDA {cuda}: Jittor 1.3.8.5 does not compile with it unchanged; '
                        'fix: python tools/jittor_cuda_patch.py (the set-up runs it)')
    _gpu_checks(f, add, problems)


def _host_compiler(f, problems):
    """g++ newer than the toolkit accepts: nvcc stops with "unsupported GNU version"."""
    cuda = f.get('cuda') or f.get('nvcc_release')
    found = runtime.gcc_problem(cuda, f.get('gcc')) if cuda else None
    if found:
        problems.append(f'{found[0]}; fix: {found[1]}')


def _gpu_checks(f, add, problems):
    """cuDNN (none, or pip's not yet linked into the install), the host compiler, ranks sharing a GPU."""
    if not f.get('cudnn'):
        if f.get('pip_cudnn') and not f.get('cudnn_visible'):
            problems.append(f"cuDNN is installed by pip ({f['pip_cudnn']}), where Jittor does not look: GPU "
                            "convolutions run on Jittor's own, much slower kernels; fix: " + SETUP
                            + ", which links it into the install")
        else:
            problems.append("no cuDNN that Jittor finds: GPU convolutions run on Jittor's own, much slower "
                            f'kernels; fix: {runtime.NO_CUDNN_FIX}')
    _host_compiler(f, problems)
    if f.get('gpu_placement'):
        add('MPI rank', f['gpu_placement'])
    if (f.get('mpi_share') or 1) > 1:
        problems.append(f"{f['mpi_share']} MPI ranks share each GPU: each gets a share of its memory (smaller "
                        'tiles and micro-batches) and their kernels queue on one device; fix: start as many '
                        'ranks per machine as it has GPUs (mpirun -np N), or give each rank its own GPU with '
                        'CUDA_VISIBLE_DEVICES')


def main(argv=None):
    from . import guarded
    from .parser import Parser  # a bad flag is one 'error:' line and exit 2, as for every command
    return guarded(lambda: _doctor(Parser(prog='sbvsr-doctor', description=__doc__.split('\n\n')[0]), argv))


def _doctor(parser, argv):
    parser.parse_args(argv)
    print('jittor-sbvsr doctor: what this machine will run, and why', flush=True)
    facts = gather()
    lines, problems, rc = diagnose(facts)
    print('\n'.join(lines))
    for p in problems:
        print(f'problem: {p}')
    print(('ok: runs on ' if rc == 0 else 'error: cannot run on ') + facts.get('device', 'any device')
          + (f' ({len(problems)} problem{"s" * (len(problems) != 1)} above)' if problems else ''))
    return rc


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from jittor_sbvsr_launcher import launch
    sys.exit(launch(main))

"""Memory budgets: a size typed by the user, and what this machine can give by default.

Both inference (the tile size, infer/engine.py) and training (micro-batches,
trainer/micro.py) plan their work from one budget in bytes: ``--max_memory``
when given, else :func:`default_budget`. The budget is what the work itself
may use, on top of the fixed cost of the process (Jittor, the weights).
"""
import argparse
import os
import re
import sys

__all__ = ['parse_size', 'size_arg', 'format_size', 'host_memory', 'available_bytes', 'default_budget', 'is_out_of_memory',
           'cudnn_workspace', 'device_budget']

_UNITS = {'': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}
_SIZE = re.compile(r'\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*', re.IGNORECASE)
CPU_SHARE = 0.75  # of MemAvailable: the page cache and other programs keep the rest
GPU_SHARE = 0.9  # of the device's free memory: other programs may allocate meanwhile
# Device memory that is not the work's tensors: cuDNN's algorithm search (Jittor 1.3.8.5's
# cudnn_conv_op.cc tries workspaces up to max_workspace_ratio x the card, 0.25 as shipped; the
# runtime lowers the ratio to cudnn_workspace()), and the allocator's slack
WORKSPACE_CAP = 512 * 2 ** 20
WORKSPACE_SHARE = 0.25
ALLOCATOR_SLACK = 256 * 2 ** 20  # CUDA context growth, cuBLAS handles, the caching allocator's rounding
# what Jittor, CUDA and the C++ runtime say when an allocation fails
_OOM_TEXTS = ('out of memory', 'Out of memory', 'OutOfMemory', 'cudaErrorMemoryAllocation',
              'CUDA_ERROR_OUT_OF_MEMORY', 'std::bad_alloc', 'MemoryError', 'Unable to alloc',
              'memory is overflow')


def parse_size(text):
    """Bytes of a size such as '2G', '512M', '1.5GiB', '800000000' (units of 1024); ValueError if bad."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 2G, 512M, 1.5G)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise ValueError(f'{text!r}: must be more than 0 bytes')
    return n


def size_arg(text):
    """argparse type for a size flag: one 'error:' line through the package's parsers."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def format_size(n):
    """A byte count for log lines: '1.5 GiB', '300 MiB'."""
    for unit, f in (('GiB', 2 ** 30), ('MiB', 2 ** 20), ('KiB', 2 ** 10)):
        if n >= f:
            return f'{n / f:.1f} {unit}'
    return f'{int(n)} B'


def _meminfo(path='/proc/meminfo'):
    """Linux's (MemAvailable, MemTotal) in bytes (None where there is no such file or line)."""
    try:
        with open(path, encoding='utf-8') as f:
            info = {k: int(v.split()[0]) * 1024 for k, v in (ln.split(':', 1) for ln in f if ':' in ln)}
        return info['MemAvailable'], info['MemTotal']
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _windows_memory(kernel32):
    """Windows' (available, total) physical memory in bytes from ``kernel32``'s GlobalMemoryStatusEx, or None."""
    import ctypes

    class Status(ctypes.Structure):  # MEMORYSTATUSEX, 64 bytes
        _fields_ = [('length', ctypes.c_uint32), ('load', ctypes.c_uint32)] + [
            (n, ctypes.c_uint64) for n in ('total', 'avail', 'tpf', 'apf', 'tv', 'av', 'aev')]
    s = Status()
    s.length = ctypes.sizeof(s)
    return (s.avail, s.total) if kernel32.GlobalMemoryStatusEx(ctypes.byref(s)) else None


def _sysconf_memory():
    """Free and all physical pages x page size (POSIX systems that have them), else None."""
    if sys.platform != 'win32':
        try:
            page = os.sysconf('SC_PAGE_SIZE')
            return os.sysconf('SC_AVPHYS_PAGES') * page, os.sysconf('SC_PHYS_PAGES') * page
        except (AttributeError, ValueError, OSError):
            pass
    return None


def host_memory():
    """(available, total) bytes of this machine's memory, or None if it cannot be asked."""
    if sys.platform == 'win32':
        import ctypes
        return _windows_memory(ctypes.windll.kernel32)
    return _meminfo() or _sysconf_memory()


def cuda_memory(ctypes=None):
    """(free, total) bytes of the current CUDA device, or None when that cannot be asked.

    In order: cudaMemGetInfo of the CUDA runtime Jittor has loaded, looked up
    in the process (POSIX: dlsym on the whole process; Windows' ``CDLL(None)``
    raises TypeError, it has no such lookup); the driver's cuMemGetInfo_v2
    (runtime.cuda_driver: nvcuda.dll, libcuda.so.1), which answers for the
    context Jittor made current on this thread; the device total less what
    Jittor's own allocator holds (jt.get_mem_info). ``ctypes``: the module
    (tests hand in one that behaves as Windows').
    """
    from ..runtime import cuda_driver
    if ctypes is None:
        import ctypes
    driver = cuda_driver(ctypes.CDLL)
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    for lib, name in [(None, 'cudaMemGetInfo')] + ([(driver, 'cuMemGetInfo_v2')] if driver else []):
        try:
            fn = getattr(ctypes.CDLL(lib), name)
            if fn(ctypes.byref(free), ctypes.byref(total)) == 0 and total.value > 0:
                return int(free.value), int(total.value)
        except (AttributeError, OSError, TypeError):
            pass
    try:
        import jittor as jt
        info = jt.get_mem_info()
        if info.total_cuda_ram > 0:
            return int(info.total_cuda_ram - info.total_cuda_used), int(info.total_cuda_ram)
    except Exception:  # an old Jittor without it
        pass
    return None


def cudnn_workspace(total):
    """The most cuDNN's algorithm search may take on a card of ``total`` bytes (the runtime sets
    Jittor's ratio to this)."""
    return int(min(WORKSPACE_SHARE * total, WORKSPACE_CAP))


def device_budget(usable, total=None):
    """The work's budget from the device memory it may use (``usable``): less cuDNN's workspace
    and the allocator's slack (``total``: the card's size, default ``usable``)."""
    return max(int(usable - cudnn_workspace(total or usable) - ALLOCATOR_SLACK), 0)


def available_bytes(device='cpu'):
    """Memory free for new work on ``device`` ('cpu' or 'cuda') now, or None if unknown."""
    if device == 'cuda':
        mem = cuda_memory()
        return mem[0] if mem else None
    mem = host_memory()
    return mem[0] if mem else None


def default_budget(device='cpu', processes=1):
    """The budget when --max_memory is not given: a share of what is free now, split between
    ``processes`` (the MPI ranks that share this memory: of a machine for the CPU, of one GPU for
    CUDA); None when the free memory is unknown (no limit). Under mpirun it is read once, by rank 0
    (callers broadcast it: free memory moves between reads)."""
    if device == 'cuda':
        mem = cuda_memory()
        if mem is None:
            return None
        share = device_budget(mem[0] * GPU_SHARE / max(processes, 1), mem[1])
    else:
        free = available_bytes(device)
        if free is None:
            return None
        share = free * CPU_SHARE / max(processes, 1)
    return max(int(share), 64 * 2 ** 20)


def is_out_of_memory(e):
    """True for an exception that says an allocation failed (host or device)."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return any(s in text for s in _OOM_TEXTS)

"""Memory budgets: a size typed by the user, and what this machine can give by default.

Both inference (the tile size, infer/engine.py) and training (micro-batches,
trainer/micro.py) plan their work from one budget in bytes: ``--max_memory``
when given, else :func:`default_budget`. The budget is what the work itself
may use, on top of the fixed cost of the process (Jittor, the weights).
"""
import argparse
import os
import re

__all__ = ['parse_size', 'size_arg', 'format_size', 'host_memory', 'available_bytes', 'default_budget', 'is_out_of_memory']

_UNITS = {'': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}
_SIZE = re.compile(r'\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*', re.IGNORECASE)
CPU_SHARE = 0.75  # of MemAvailable: the page cache and other programs keep the rest
GPU_SHARE = 0.85  # of the device's free memory, after GPU_MARGIN
GPU_MARGIN = 512 * 2 ** 20  # CUDA context growth, cuDNN/cuBLAS workspaces
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


def _windows_memory():
    """Windows' (available, total) physical memory in bytes, or None."""
    import ctypes

    class Status(ctypes.Structure):  # MEMORYSTATUSEX
        _fields_ = [('length', ctypes.c_uint32), ('load', ctypes.c_uint32)] + [
            (n, ctypes.c_uint64) for n in ('total', 'avail', 'tpf', 'apf', 'tv', 'av', 'aev')]
    s = Status()
    s.length = ctypes.sizeof(s)
    return (s.avail, s.total) if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(s)) else None


def _sysconf_memory():
    """Free and all physical pages x page size (POSIX systems that have them), else None."""
    try:
        page = os.sysconf('SC_PAGE_SIZE')
        return os.sysconf('SC_AVPHYS_PAGES') * page, os.sysconf('SC_PHYS_PAGES') * page
    except (AttributeError, ValueError, OSError):
        return None


def host_memory():
    """(available, total) bytes of this machine's memory, or None if it cannot be asked."""
    if os.name == 'nt':
        return _windows_memory()
    return _meminfo() or _sysconf_memory()


def _cuda_free():
    """Free bytes on the current CUDA device, or None when that cannot be asked.

    cudaMemGetInfo through the CUDA runtime Jittor has loaded; failing that,
    the device total less what Jittor's own allocator holds (jt.get_mem_info).
    """
    import ctypes
    try:
        fn = ctypes.CDLL(None).cudaMemGetInfo
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if fn(ctypes.byref(free), ctypes.byref(total)) == 0 and total.value > 0:
            return int(free.value)
    except (AttributeError, OSError):
        pass
    try:
        import jittor as jt
        info = jt.get_mem_info()
        if info.total_cuda_ram > 0:
            return int(info.total_cuda_ram - info.total_cuda_used)
    except Exception:  # an old Jittor without it
        pass
    return None


def available_bytes(device='cpu'):
    """Memory free for new work on ``device`` ('cpu' or 'cuda') now, or None if unknown."""
    if device == 'cuda':
        return _cuda_free()
    mem = host_memory()
    return mem[0] if mem else None


def default_budget(device='cpu', processes=1):
    """The budget when --max_memory is not given: a share of what is free now, split between
    ``processes`` (MPI ranks on one machine); None when the free memory is unknown (no limit)."""
    free = available_bytes(device)
    if free is None:
        return None
    if device == 'cuda':
        share = (free - GPU_MARGIN) * GPU_SHARE
    else:
        share = free * CPU_SHARE
    return max(int(share / max(processes, 1)), 64 * 2 ** 20)


def is_out_of_memory(e):
    """True for an exception that says an allocation failed (host or device)."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return any(s in text for s in _OOM_TEXTS)

"""Small helpers shared by the CLIs: atomic output files, progress and logging."""
from .files import atomic_save, atomic_write_bytes, ensure_dir, save_npy_atomic, save_png_atomic
from .log import Logger
from .progress import Bar, format_seconds

__all__ = ['atomic_save', 'atomic_write_bytes', 'ensure_dir', 'save_npy_atomic',
           'save_png_atomic', 'Bar', 'Logger', 'format_seconds']

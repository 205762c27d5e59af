"""The Python API: :class:`SelfBlindVSR`, the command line's inference from a program.

``frames`` takes the frames of one video from anywhere (a decoder, a
notebook, a camera) and yields the super-resolved frames, the same bytes
the command writes as PNGs for the same clip and flags; ``video`` does a
file; ``run`` is the whole command (inputs checked, outputs written, scores
logged). Bad input raises :class:`~jittor_sbvsr.errors.UserError` with the
command's one-line message.
"""
import os
import sys

from .errors import UserError
from .paths import ROOT

__all__ = ['SelfBlindVSR']


class SelfBlindVSR:
    """A checkpoint loaded for inference.

    ``model_path``: a .pkl or the original .pt; ``device``: 'auto', 'cpu' or
    'cuda'; ``max_memory``: bytes (or '2G') a window may use beyond the
    model (None: the command's default share of what is free); ``border``:
    every frame gets an output (the first and last frames' windows repeat
    frames), else only those with a full window.
    """

    def __init__(self, model_path, device='auto', max_memory=None, border=True):
        from . import runtime
        from .infer.engine import VideoSR
        from .infer.memory_plan import run_budget
        from .infer.model import Checkpoint
        from .utils.memory import parse_size
        if isinstance(max_memory, str):
            try:
                max_memory = parse_size(max_memory)
            except ValueError as e:
                raise UserError(f'max_memory {max_memory!r}: {e}') from None
        self.model_path, self.border, self.max_memory = os.fspath(model_path), bool(border), max_memory
        checkpoint = Checkpoint.read(self.model_path)
        self.n_seq, self.scale = checkpoint.arch['n_sequence'], checkpoint.arch['scale']
        self._device = device
        self.device = runtime.select_device(device)
        self.budget = run_budget(max_memory, 0, None, self.device)
        self._engine = VideoSR(checkpoint.model(), self.n_seq, max_memory=self.budget)

    def frames(self, frames, border=None):
        """Yield the SR frame (uint8 HxWx3) of each window of ``frames`` (uint8 HxWx3 RGB arrays of
        one video, read as they are needed: a window's frames are held, not the video's)."""
        from .data.windows import to_uint8
        from .infer.frames import FrameStream
        stream = FrameStream(frames, self.n_seq, self.border if border is None else border)
        for _, recons, _, _ in self._engine.windows(stream, stream, 0, sys.maxsize):
            yield to_uint8(recons)

    def video(self, src, dst, crf=None):
        """Super-resolve the video file ``src`` into the video file ``dst`` (H.264, ``crf``: the
        command's default; sound, subtitles, chapters, aspect and colour carried over as the writer can),
        every frame kept, as the command does a video file."""
        from .data.video import DEFAULT_CRF, VideoReader, VideoWriter, probe
        src, dst = os.fspath(src), os.fspath(dst)
        info = probe(src)
        with VideoReader(src, info) as reader:
            writer = VideoWriter(dst, info.fps or 25, crf=DEFAULT_CRF if crf is None else crf, source=src,
                                 info=info)
            try:
                for sr in self.frames(reader.frames(0), border=True):
                    writer.write(sr)
            except BaseException:
                writer.abort()
                raise
            writer.close()

    def run(self, input_path, **flags):
        """The command's whole run over ``input_path`` with this model, device, memory budget and
        border, and the command's other flags as keywords (``gt_path``, ``result_path``,
        ``infer_flag``, ``save_kernel``, ...); returns what it measured (infer/run.py:Result)."""
        from .cli.infer import build_parser
        from .infer.plan import make_plan
        from .infer.run import run
        options = vars(build_parser().parse_args([]))
        unknown = sorted(set(flags) - set(options))
        if unknown:
            raise TypeError(f'run() got unknown flags: {", ".join(unknown)}')
        options.update(input_path=os.fspath(input_path), model_path=self.model_path, device=self._device,
                       max_memory=self.max_memory, border=self.border)
        options.update(flags)
        return run(make_plan(options, ROOT))

"""Inference over several processes (``mpirun -np N python inference.py ...``), same output as one.

The run's windows (one per output frame), video after video, are one list;
rank r takes the r-th contiguous span of it (:func:`window_spans`). So whole
videos and the windows of a long video are both split, and each rank runs
the sliding window over its share: its reuse caches start empty at the
share's first window, which gives the same bits as a run over the whole
video (engine.py computes each cached feature on its own).

What stays as in one process, and why:

- PNG frames and kernels: written by the rank that computed them (atomic
  writes, disjoint names);
- a video file's output (mp4): a video within one rank's share is encoded by
  that rank as it goes. A video split over ranks writes its frames as PNG
  parts (lossless, outputs.py), and rank 0 encodes them in order when every
  rank is done: one ffmpeg over the same frames with the same x264 settings
  (its thread count too, data/video.py), so the same file;
- the log: only rank 0 writes it; the per-frame scores and times come to it
  bit for bit (:func:`~jittor_sbvsr.dist.merge_owned`) and it logs them in
  order, then the averages, from the same numbers as one process;
- the output folder: every rank checks it (same errors), rank 0's choice is
  used (time stamps may differ by a second between ranks).

The output folder must be on a filesystem every rank sees (rank 0 reads the
other ranks' frames of a split video).

No ``--resume`` here: a run under mpirun keeps no record (resume.py).
"""


def window_spans(counts, rank, world):
    """{video index: (start, stop)} of the windows rank ``rank`` of ``world`` runs.

    ``counts``: windows per video. The run's windows, in order, are cut into
    ``world`` contiguous spans that differ by one window at most.
    """
    total = sum(counts)
    lo, hi = total * rank // world, total * (rank + 1) // world
    out, offset = {}, 0
    for i, n in enumerate(counts):
        start, stop = max(lo - offset, 0), min(hi - offset, n)
        if start < stop:
            out[i] = (start, stop)
        offset += n
    return out

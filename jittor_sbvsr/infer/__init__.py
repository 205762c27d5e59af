"""Inference: one run over a set of videos.

``plan.py`` turns the flags into a frozen plan, every choice made and
checked before anything is written; ``run.py`` carries it out (the route of
a frame: read, window, network, score and write, log) and returns what it
measured; ``model.py`` reads the checkpoint and loads the model;
``inputs.py`` lists, pairs, checks and reads the videos; ``frames.py`` hands
them over in window order; ``engine.py`` runs the deployed model window by
window over one video; ``outputs.py`` scores and writes a video's frames, in
the worker process of ``host.py``, beside the network, with the PSNR/SSIM of
``scorer.py`` at idle priority; ``report.py`` makes the log's lines and the
progress bar; ``resume.py`` keeps the record that ``--resume`` continues
from; ``split.py`` cuts the windows among ``mpirun`` ranks (one contiguous
span each). The Python API over all this is ``jittor_sbvsr/api.py``.
"""

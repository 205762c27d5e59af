"""Inference: one run over a set of videos.

``run.py`` drives a run (the route of a frame: read, window, network, score
and write, log); ``inputs.py`` lists, pairs, checks and reads the videos;
``setup.py`` chooses the model and output folder; ``engine.py`` runs the
deployed model window by window over one video; ``outputs.py`` scores and
writes a video's frames, in the worker process of ``host.py``, beside the
network, with the PSNR/SSIM of ``scorer.py`` at idle priority;
``report.py`` makes the log's lines; ``resume.py`` keeps the record that
``--resume`` continues from; ``split.py`` cuts the windows among
``mpirun`` ranks (one contiguous span each).
"""

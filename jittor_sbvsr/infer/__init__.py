"""Inference: one run over a set of videos.

``run.py`` drives a run; ``inputs.py`` lists, pairs, checks and reads the
videos; ``setup.py`` chooses the model and output folder; ``split.py`` cuts
the windows into one contiguous span per ``mpirun`` rank; ``engine.py`` runs the deployed model
window by window over one video.
"""

"""Weakly supervised fine-tuning on RGB-D crops (paper Sec. 4.3), one job per module:

config (WeakConfig, the init run; no TensorFlow) -> data (crops and batches) -> objective
(L_weakly: rendered depth maps and the rest) -> pseudo_gt (the init model's meshes) -> trainer
(the staged loop) -> evaluation (errors, plausibility, figures) -> run (one run end to end).
The command line is `python -m train.weak_stb`.
"""

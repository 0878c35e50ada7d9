"""Training entry points: `python -m train.synthetic` (paper Sec. 4.3) and `python -m train.ablations`
(Tables 1-2); shared modules: config, datasets, objectives, loop, schedules, budgeted_run, batch_norm,
checkpoints, evaluate."""

"""Training machinery around the tasks: the Trainer, its callbacks (checkpoints, EMA, the same-data
check across ranks) and the run's CSV logger."""

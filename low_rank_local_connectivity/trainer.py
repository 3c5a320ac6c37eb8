"""Compatibility name of `low_rank_local_connectivity.training`.

The README's `trainer.Trainer(config, model_dir).train_and_evaluate()` and
`trainer.train_and_evaluate(...)` keep working; new code imports `training`.
"""

from low_rank_local_connectivity.training import *  # noqa: F401,F403

"""Training and evaluation of the experiments (README, "Repository layout").

The roles, as in Orbit and Keras:

- `runner.py`: `train_and_evaluate(config, model_dir)` puts a run together and
  runs it; `evaluate_checkpoint` evaluates a saved checkpoint; `create_task`
  builds the task of the Keras backend in use;
- `task.py`: what a run builds (model, optimiser, inputs, steps);
  `tf_task.py` and `jax_task.py` are TensorFlow's and JAX's tasks;
- `controller.py`: `Controller`, the outer loop;
- `callbacks/`: the callback interface and the built-in behaviour
  (checkpoints, best checkpoint, `metrics.jsonl`, TensorBoard, progress, NaN stop);
- `checkpointing.py`: every TensorFlow checkpoint read and write;
- `run_dir.py`: the `model_dir` file format; `runs.py`: `open_run`, its facade;
- `lock.py`: the `model_dir` lock;
- `config_checks.py`: config validation;
- `optimization.py`: the learning-rate schedule and the optimiser;
- `steps.py`, `inputs.py`, `distribution.py`, `summaries.py`: the
  TensorFlow steps, input pipelines, strategies and event files;
- `errors.py`: the `TrainerError` family.
"""

from low_rank_local_connectivity.training.callbacks import Callback
from low_rank_local_connectivity.training.callbacks import default_callbacks
from low_rank_local_connectivity.training.config_checks import PRECISIONS
from low_rank_local_connectivity.training.config_checks import STRATEGIES
from low_rank_local_connectivity.training.config_checks import validate_config
from low_rank_local_connectivity.training.controller import Controller
from low_rank_local_connectivity.training.errors import CheckpointCorruptedError
from low_rank_local_connectivity.training.errors import InputDataError
from low_rank_local_connectivity.training.errors import ModelDirLockedError
from low_rank_local_connectivity.training.errors import ModelDirMismatchError
from low_rank_local_connectivity.training.errors import ModelDirWriteError
from low_rank_local_connectivity.training.errors import NonFiniteLossError
from low_rank_local_connectivity.training.errors import TrainerError
from low_rank_local_connectivity.training.lock import ModelDirLock
from low_rank_local_connectivity.training.optimization import OPTIMIZERS
from low_rank_local_connectivity.training.optimization import SCHEDULES
from low_rank_local_connectivity.training.optimization import WarmupDecaySchedule
from low_rank_local_connectivity.training.optimization import create_learning_rate_schedule
from low_rank_local_connectivity.training.optimization import create_optimizer
from low_rank_local_connectivity.training.runner import create_task
from low_rank_local_connectivity.training.runner import evaluate_checkpoint
from low_rank_local_connectivity.training.runner import train_and_evaluate
from low_rank_local_connectivity.training.runs import Run
from low_rank_local_connectivity.training.runs import open_run
from low_rank_local_connectivity.training.runs import remove_older_checkpoints
from low_rank_local_connectivity.training.task import count_parameters

__all__ = [
    "Callback",
    "default_callbacks",
    "PRECISIONS",
    "STRATEGIES",
    "validate_config",
    "Controller",
    "CheckpointCorruptedError",
    "InputDataError",
    "ModelDirLockedError",
    "ModelDirMismatchError",
    "ModelDirWriteError",
    "NonFiniteLossError",
    "TrainerError",
    "ModelDirLock",
    "OPTIMIZERS",
    "SCHEDULES",
    "WarmupDecaySchedule",
    "create_learning_rate_schedule",
    "create_optimizer",
    "evaluate_checkpoint",
    "train_and_evaluate",
    "Run",
    "open_run",
    "remove_older_checkpoints",
    "count_parameters",
    "create_task",
]

"""Training and evaluation of the experiments (README, "Repository layout").

- `loop.py`: `Trainer` (the outer loop) and `train_and_evaluate`;
- `hooks.py`: the hook interface the loop calls;
- `steps.py`: the compiled training and evaluation steps;
- `distribution.py`: strategies, determinism, replica synchronisation;
- `checkpointing.py`: restore with fallback, repair, quarantine, saves;
- `optimization.py`: the learning-rate schedule and the optimiser;
- `inputs.py`: the distributed input pipelines;
- `run_dir.py`: the `model_dir` layout, atomic writes, records, `load_model`;
- `lock.py`: the `model_dir` lock;
- `summaries.py`: TensorBoard summaries and progress lines;
- `config_checks.py`: config validation and the model it describes;
- `errors.py`: the `TrainerError` family.

`steps.py`, `distribution.py` and `checkpointing.py` are the only modules of the
loop that use TensorFlow's training APIs.
"""

from low_rank_local_connectivity.training.config_checks import PRECISIONS
from low_rank_local_connectivity.training.config_checks import build_model
from low_rank_local_connectivity.training.config_checks import count_parameters
from low_rank_local_connectivity.training.config_checks import resolve_model_config
from low_rank_local_connectivity.training.config_checks import validate_config
from low_rank_local_connectivity.training.distribution import STRATEGIES
from low_rank_local_connectivity.training.distribution import create_strategy
from low_rank_local_connectivity.training.distribution import enable_determinism
from low_rank_local_connectivity.training.errors import CheckpointCorruptedError
from low_rank_local_connectivity.training.errors import InputDataError
from low_rank_local_connectivity.training.errors import ModelDirLockedError
from low_rank_local_connectivity.training.errors import ModelDirMismatchError
from low_rank_local_connectivity.training.errors import ModelDirWriteError
from low_rank_local_connectivity.training.errors import NonFiniteLossError
from low_rank_local_connectivity.training.errors import TrainerError
from low_rank_local_connectivity.training.hooks import Hook
from low_rank_local_connectivity.training.lock import ModelDirLock
from low_rank_local_connectivity.training.loop import EVAL_SPLITS
from low_rank_local_connectivity.training.loop import Trainer
from low_rank_local_connectivity.training.loop import train_and_evaluate
from low_rank_local_connectivity.training.optimization import OPTIMIZERS
from low_rank_local_connectivity.training.optimization import SCHEDULES
from low_rank_local_connectivity.training.optimization import WarmupDecaySchedule
from low_rank_local_connectivity.training.optimization import create_learning_rate_schedule
from low_rank_local_connectivity.training.optimization import create_optimizer
from low_rank_local_connectivity.training.run_dir import checkpoint_path
from low_rank_local_connectivity.training.run_dir import load_config
from low_rank_local_connectivity.training.run_dir import load_metadata
from low_rank_local_connectivity.training.run_dir import load_model
from low_rank_local_connectivity.training.run_dir import restore_model

__all__ = [
    "PRECISIONS",
    "build_model",
    "count_parameters",
    "resolve_model_config",
    "validate_config",
    "STRATEGIES",
    "create_strategy",
    "enable_determinism",
    "CheckpointCorruptedError",
    "InputDataError",
    "ModelDirLockedError",
    "ModelDirMismatchError",
    "ModelDirWriteError",
    "NonFiniteLossError",
    "TrainerError",
    "Hook",
    "ModelDirLock",
    "EVAL_SPLITS",
    "Trainer",
    "train_and_evaluate",
    "OPTIMIZERS",
    "SCHEDULES",
    "WarmupDecaySchedule",
    "create_learning_rate_schedule",
    "create_optimizer",
    "checkpoint_path",
    "load_config",
    "load_metadata",
    "load_model",
    "restore_model",
]

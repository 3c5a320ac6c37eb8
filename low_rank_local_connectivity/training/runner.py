"""Training and evaluating an experiment: the pieces put together.

`train_and_evaluate(config, model_dir)` is the one entry point of a run
(scripts/train.py, the grid, fine-tuning, the tools): it checks the config,
resolves the dataset, takes the `model_dir` lock, builds the task, hands the
controller the task's checkpoint manager and the callbacks, and runs it.
`evaluate_checkpoint` evaluates a saved checkpoint of a run.
"""

import os

import keras

from low_rank_local_connectivity import data
from low_rank_local_connectivity import devices
from low_rank_local_connectivity.training import callbacks as callbacks_lib
from low_rank_local_connectivity.training import config_checks
from low_rank_local_connectivity.training import controller as controller_lib
from low_rank_local_connectivity.training import lock as lock_lib
from low_rank_local_connectivity.training import run_dir
from low_rank_local_connectivity.training import runs


def _check_model_dir(model_dir):
    if not isinstance(model_dir, (str, os.PathLike)) or not str(model_dir):
        raise ValueError(
            "Invalid value for argument `model_dir`. Expected a directory "
            f"path. Received: model_dir={model_dir!r}"
        )
    return os.fspath(model_dir)


def _resolve_dataset(config):
    """The `data.ResolvedDataset` of a config, located and its files checked."""
    dataset = data.resolve_config(config.dataset)
    dataset.metadata  # Locates the data (TFDS: prepared, or fails fast).
    dataset.check_files()
    return dataset


def train_and_evaluate(config, model_dir, *, callbacks=(), progress=True,
                       strategy=None, checkpoint_manager_factory=None,
                       input_transform=None):
    """Trains and evaluates an experiment in `model_dir`, resuming if it exists.

    The task is built first (nothing of `model_dir` is read but whether it
    has checkpoints); the chief then takes the `model_dir` lock, and the
    controller restores the newest readable checkpoint under it. A new run with
    `config.init_from` starts from that run's model weights instead.

    Args:
        config: experiment `ml_collections.ConfigDict` (see
            `configs/experiment.py`); copied, never modified.
        model_dir: str, directory of the run (created if needed).
        callbacks: sequence of `callbacks.Callback` run after the built-in
            ones (`callbacks.default_callbacks`).
        progress: bool, print the progress lines (`callbacks.ProgressLogger`).
        strategy: optional `tf.distribute.Strategy` (default: from
            `config.train.distribution_strategy`).
        checkpoint_manager_factory: optional replacement of
            `tf.train.CheckpointManager` (see `checkpointing.Checkpoints`).
        input_transform: optional function `(split, dataset) -> dataset`
            applied to every batched input pipeline.

    Returns:
        The results dict written to `model_dir/results.json`.

    Raises:
        ValueError / TypeError: for an invalid config or `model_dir`.
        DataNotFoundError: if the dataset is not available.
        TrainerError: `ModelDirLockedError` (another live trainer uses
            `model_dir`), `ModelDirMismatchError` (it holds another
            experiment), `CheckpointCorruptedError`, `NonFiniteLossError`,
            `ModelDirWriteError`, `InputDataError`.
    """
    config_checks.validate_config(config)
    devices.warn_if_bfloat16_is_emulated(config.train.mixed_precision)
    model_dir = _check_model_dir(model_dir)
    dataset = _resolve_dataset(config)
    init_from = config.get("init_from")
    if init_from is not None and run_dir.RunDirectory(model_dir).has_checkpoints():
        init_from = None  # A resumed run restores its own checkpoint.
    task = create_task(
        config, dataset, strategy=strategy, input_transform=input_transform,
        init_from=init_from,
    )
    # The lock before the run's own checkpoint is read (Controller.run).
    lock = lock_lib.ModelDirLock(model_dir).acquire() if task.is_chief else None
    try:
        controller = controller_lib.Controller(
            task, model_dir,
            task.checkpoints(model_dir, checkpoint_manager_factory),
            [*callbacks_lib.default_callbacks(progress=progress), *callbacks],
        )
        return controller.run()
    finally:
        if lock is not None:
            lock.release()


def evaluate_checkpoint(model_dir, split="test", checkpoint="best", *, strategy=None):
    """Evaluates a checkpoint of a run on one split.

    Args:
        model_dir: str, a run directory written by the trainer.
        split: 'valid' or 'test'.
        checkpoint: 'best' or 'latest'.
        strategy: optional `tf.distribute.Strategy`.

    Returns:
        The metrics dict (see `TensorFlowTask.evaluate`).

    Raises:
        ValueError: if `model_dir` holds no run or no such checkpoint.
    """
    run = runs.open_run(model_dir)
    task = create_task(run.config, _resolve_dataset(run.config),
                                strategy=strategy)
    if task.checkpoints(run.model_dir).restore(checkpoint) is None:
        raise ValueError(
            f"Invalid value for argument `checkpoint`: {model_dir!r} has no "
            f"{checkpoint!r} checkpoint. Received: checkpoint={checkpoint!r}"
        )
    return task.evaluate(split)


def create_task(config, dataset=None, *, strategy=None, input_transform=None,
                init_from=None):
    """The task of the Keras backend in use.

    Args:
        config: a validated experiment ConfigDict (copied, never modified).
        dataset: the run's `data.ResolvedDataset` (default: resolved from
            `config.dataset`).
        strategy: optional `tf.distribute.Strategy` (TensorFlow).
        input_transform: optional function `(split, dataset) -> dataset`
            applied to every batched pipeline before it is positioned and
            distributed (the seam through which tools inject bad inputs).
        init_from: optional mapping (`model_dir`, `checkpoint`): initial model
            weights (see `build_model`).

    Returns:
        A task (see the module docstring).
    """
    if dataset is None:
        dataset = data.resolve_config(config.dataset)
    options = dict(strategy=strategy, input_transform=input_transform,
                   init_from=init_from)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from low_rank_local_connectivity.training import tf_task

        return tf_task.TensorFlowTask(config, dataset, **options)
    if backend == "jax":
        from low_rank_local_connectivity.training import jax_task

        return jax_task.JaxTask(config, dataset, **options)
    raise ValueError(
        f"The trainer runs on the TensorFlow and JAX backends of Keras, not on "
        f"KERAS_BACKEND={backend!r} (the layers, models and conversion run on "
        "every backend). Set KERAS_BACKEND=tensorflow or jax."
    )

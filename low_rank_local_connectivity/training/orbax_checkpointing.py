"""Orbax checkpoints of a run on JAX: the JAX counterpart of `checkpointing.py`.

A checkpoint is a step directory written by an `orbax.checkpoint`
`CheckpointManager` (`checkpoints/<step>/`, `best/<step>/`) holding the task's
`state()`: every model and optimiser variable as a NumPy array, the step and
the training time. Orbax writes a step into a temporary directory and renames
it when complete, so an interrupted write never becomes a checkpoint. As on
TensorFlow, an unreadable checkpoint is skipped on restore (the run resumes
from the one before it) and moved to `<dir>/corrupted/` by `repair`; when none
is readable the run stops instead of restarting from step 0.

The managers are created when first used, so that only `repair` (under the
`model_dir` lock) removes what an interrupted write left.
"""

import os
import re
import shutil
import shutil

from absl import logging
import numpy as np

from low_rank_local_connectivity.training import checkpoint_fallback
from low_rank_local_connectivity.training import errors
from low_rank_local_connectivity.training import run_dir

_TMP_MARK = ".orbax-checkpoint-tmp"


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def step_directories(directory):
    """Steps of the complete checkpoints in `directory`, newest first."""
    if not os.path.isdir(directory):
        return []
    return sorted((int(name) for name in os.listdir(directory)
                   if re.fullmatch(r"\d+", name)), reverse=True)


def is_orbax_run(model_dir):
    """Whether the checkpoints of `model_dir` are Orbax step directories."""
    files = run_dir.RunDirectory(model_dir)
    return any(step_directories(files.checkpoint_dir(name)) for name in run_dir.CHECKPOINTS)


def _manager(directory, keep):
    ocp = _ocp()
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=False,
        ),
    )


def _read(directory, step, target=None):
    ocp = _ocp()
    with _manager(directory, None) as manager:
        return manager.restore(step, args=ocp.args.StandardRestore(target))


class Checkpoints:
    """The 'latest' and 'best' Orbax checkpoints of a JAX task's run.

    Args:
        task: a `jax_task.JaxTask` (`state()`, `set_state(state)`, `step`).
        model_dir: str.
        keep: int, number of 'latest' checkpoints kept.
    """

    def __init__(self, task, model_dir, keep):
        self._task = task
        self._run_dir = run_dir.RunDirectory(model_dir)
        self._keep = keep
        self._managers = {}
        self._failures = []

    def _directory(self, checkpoint):
        return self._run_dir.checkpoint_dir(checkpoint)

    def _manager(self, checkpoint):
        if checkpoint not in self._managers:
            self._managers[checkpoint] = _manager(
                self._directory(checkpoint), self._keep if checkpoint == "latest" else 1
            )
        return self._managers[checkpoint]

    def has_checkpoint(self):
        return bool(step_directories(self._directory("latest")))

    def restore(self, checkpoint="latest"):
        """Restores the newest readable 'latest' or 'best' checkpoint.

        Returns:
            The checkpoint directory restored, or None when there is none.

        Raises:
            ValueError: if `checkpoint` is not 'latest' or 'best'.
            CheckpointCorruptedError: if checkpoints exist but none is readable.
        """
        if checkpoint not in run_dir.CHECKPOINTS:
            raise ValueError(
                "Invalid value for argument `checkpoint`. Expected 'latest' or "
                f"'best'. Received: checkpoint={checkpoint!r}"
            )
        directory = self._directory(checkpoint)

        def restore(path):
            step = int(os.path.basename(path))
            self._task.set_state(_read(directory, step, self._task.state()))
            return step

        path, failures = checkpoint_fallback.restore_newest(
            directory,
            [os.path.join(directory, str(step)) for step in step_directories(directory)],
            restore,
        )
        if path is not None and checkpoint == "latest":
            self._failures = failures
        return path

    def repair(self):
        """Under the lock, after `restore('latest')`: removes what interrupted
        writes left and moves the unreadable checkpoints to `corrupted/`."""
        for checkpoint in run_dir.CHECKPOINTS:
            directory = self._directory(checkpoint)
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if _TMP_MARK in name:
                    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
                    logging.warning(
                        "Removed the partial files of an interrupted checkpoint "
                        "write: %s", os.path.join(directory, name),
                    )
        for path, _ in self._failures:
            target = os.path.join(os.path.dirname(path), run_dir.CORRUPTED_DIR)
            os.makedirs(target, exist_ok=True)
            os.replace(path, os.path.join(target, os.path.basename(path)))
            logging.warning("Moved the unreadable checkpoint %s to %s.", path, target)
        self._failures = []
        self._managers = {}  # They rescan the directories.

    def save(self, checkpoint, step):
        """Saves a 'latest' or 'best' checkpoint of `step`; returns its path.

        Raises:
            ModelDirWriteError: if the write fails (the previous checkpoints
                are intact).
        """
        ocp = _ocp()
        manager = self._manager(checkpoint)
        directory = self._directory(checkpoint)
        try:
            if step in manager.all_steps():
                manager.delete(step)
            manager.save(step, args=ocp.args.StandardSave(self._task.state()), force=True)
            manager.wait_until_finished()
        except OSError as error:
            kept = ", ".join(str(s) for s in step_directories(directory)) or "none"
            raise errors.ModelDirWriteError(
                f"Could not write the checkpoint of step {step} in {directory} "
                f"({errors.one_line(error)}). The previous checkpoints are "
                f"intact: steps {kept}. Free disk space or make the directory "
                "writable, then rerun to resume."
            ) from None
        return os.path.join(directory, str(step))

    def last_good_message(self):
        """A sentence naming the newest 'latest' checkpoint (for error messages)."""
        steps = step_directories(self._directory("latest"))
        if not steps:
            return checkpoint_fallback.last_good_message(None, None)
        path = os.path.join(self._directory("latest"), str(steps[0]))
        return checkpoint_fallback.last_good_message(path, steps[0])


def checkpoint_path(model_dir, checkpoint="best"):
    """The step directory of a run's 'best' or 'latest' Orbax checkpoint.

    Raises:
        ValueError: if there is no such checkpoint.
    """
    directory = run_dir.RunDirectory(model_dir).checkpoint_dir(checkpoint) if (
        checkpoint in run_dir.CHECKPOINTS) else None
    steps = step_directories(directory) if directory else []
    if not steps:
        raise ValueError(
            f"Invalid value for argument `checkpoint`. Expected one of "
            f"{run_dir.CHECKPOINTS} (existing in {model_dir!r}). Received: "
            f"checkpoint={checkpoint!r}"
        )
    return os.path.join(directory, str(steps[0]))


def restore_model_weights(model, model_dir, checkpoint="best"):
    """`checkpointing.restore_model_weights` for an Orbax checkpoint:
    (path, step), or a `ValueError` for a missing or unfitting one."""
    path = checkpoint_path(model_dir, checkpoint)
    directory, step = os.path.dirname(path), int(os.path.basename(path))
    state = _read(directory, step)
    variables = [*model.trainable_variables, *model.non_trainable_variables]
    values = [*state["trainable"], *state["non_trainable"]]
    if len(values) != len(variables) or any(
        tuple(np.shape(value)) != tuple(variable.shape)
        for value, variable in zip(values, variables)
    ):
        raise ValueError(
            f"The checkpoint {path} does not match model {model.name!r}: "
            f"{len(values)} arrays for {len(variables)} variables, or shapes differ."
        )
    for variable, value in zip(variables, values):
        variable.assign(value)
    return path, step


def remove_older_checkpoints(model_dir):
    """`checkpointing.remove_older_checkpoints` for Orbax step directories."""
    directory = run_dir.RunDirectory(model_dir).checkpoint_dir("latest")
    older = [os.path.join(directory, str(step)) for step in step_directories(directory)[1:]]
    for path in older:
        shutil.rmtree(path)
    return older

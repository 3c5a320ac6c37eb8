"""TensorFlow checkpoints of a run: the one module that reads and writes them.

Checkpoints are written by a `tf.train.CheckpointManager` (or an injected
factory with its signature), which writes the data files first and then
atomically replaces the small `checkpoint` index file; an interrupted write
therefore never becomes the latest checkpoint. An unreadable checkpoint is
skipped on restore and moved to `<dir>/corrupted/` by `repair`.

`Checkpoints` is the checkpoint manager a `Controller` is given (restore,
repair, save); `checkpoint_path` and `restore_model_weights` serve readers of a
finished run (export, fine-tuning, `runs.open_run`). Where the files are is
`run_dir.py`'s: this module knows what is inside them.
"""

import contextlib
import os
import re

from absl import logging
import tensorflow as tf

from low_rank_local_connectivity.training import checkpoint_fallback
from low_rank_local_connectivity.training import distribution
from low_rank_local_connectivity.training import errors
from low_rank_local_connectivity.training import run_dir

# Checkpoint name -> file-name prefix inside its directory.
_PREFIXES = {"latest": "ckpt", "best": "best"}


def checkpoint_step(prefix):
    """The step of a checkpoint prefix 'dir/<name>-<step>' (-1 if none)."""
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def _read_checkpoint_state(directory):
    """The `checkpoint` state proto of a directory, or None (also if corrupt)."""
    try:
        return tf.train.get_checkpoint_state(directory)
    except Exception as error:  # A corrupted state file: a text-proto error.
        logging.warning(
            "Ignoring the unreadable checkpoint state file of %s (%s).",
            directory, errors.one_line(error),
        )
        return None


def checkpoint_candidates(directory):
    """Checkpoint prefixes of `directory`, newest (highest step) first.

    Both the prefixes listed in the `checkpoint` state file and those with an
    `.index` file are returned, so that a listed checkpoint whose files are
    gone still shows up (and fails to restore) and a complete checkpoint
    written just before a crash, before the state file was updated, is used.
    """
    names = set()
    state = _read_checkpoint_state(directory)
    if state is not None:
        for path in [*state.all_model_checkpoint_paths, state.model_checkpoint_path]:
            if path:
                names.add(os.path.basename(path))
    for index in tf.io.gfile.glob(os.path.join(directory, "*.index")):
        names.add(os.path.basename(index)[: -len(".index")])
    prefixes = [os.path.join(directory, name) for name in names]
    return sorted(prefixes, key=lambda p: (checkpoint_step(p), p), reverse=True)


def _read_every_tensor(prefix):
    """Reads every tensor of a checkpoint (checksums included), or raises.

    Checking the files before restoring means that an unreadable checkpoint
    never leaves the model half restored.
    """
    reader = tf.train.load_checkpoint(prefix)
    for key in reader.get_variable_to_shape_map():
        reader.get_tensor(key)


def is_partial_checkpoint_file(name, indexed):
    """Whether a file name is the leftover of an interrupted checkpoint write.

    That is TensorFlow's temporary `<prefix>_temp*` shards and temporary index
    files, and data files whose prefix is not in `indexed` (the prefixes with
    an `.index` file).
    """
    return "_temp" in name or ".tempstate" in name or (
        ".data-" in name and name.split(".data-")[0] not in indexed
    )


def remove_partial_checkpoint_files(directory):
    """Deletes what an interrupted checkpoint write leaves behind.

    Returns:
        The paths removed.
    """
    if not tf.io.gfile.isdir(directory):
        return []
    names = tf.io.gfile.listdir(directory)
    indexed = {name[: -len(".index")] for name in names if name.endswith(".index")}
    removed = []
    for name in names:
        name = name.rstrip("/")
        if is_partial_checkpoint_file(name, indexed):
            path = os.path.join(directory, name)
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
            removed.append(path)
    return removed


def _quarantine_checkpoint(prefix):
    """Moves the files of an unreadable checkpoint to `<dir>/corrupted/`."""
    directory = os.path.dirname(prefix)
    target = os.path.join(directory, run_dir.CORRUPTED_DIR)
    tf.io.gfile.makedirs(target)
    for path in tf.io.gfile.glob(f"{prefix}.*"):
        tf.io.gfile.rename(
            path, os.path.join(target, os.path.basename(path)), overwrite=True
        )
    return target


class Checkpoints:
    """The 'latest' and 'best' checkpoints of a run.

    Args:
        state: the `tf.train.Checkpoint` of the run's state; it must
            track `global_step`.
        model_dir: str.
        strategy: the run's `tf.distribute.Strategy` (non-chief workers
            write to a private folder that is removed after each save).
        keep: int, number of 'latest' checkpoints kept.
        global_step: the int64 step variable (for messages).
        before_save: function called before every save on every worker (it
            may run collectives, e.g. `distribution.make_sync_statistics`).
        manager_factory: callable with the signature of
            `tf.train.CheckpointManager(checkpoint, directory, max_to_keep,
            checkpoint_name)` returning an object with its `save`,
            `directory` and `checkpoints`; the seam through which tools
            inject write failures.
    """

    def __init__(self, state, model_dir, strategy, keep, global_step,
                 before_save=lambda: None, manager_factory=None):
        self._state = state
        self._model_dir = model_dir
        self._strategy = strategy
        self._keep = keep
        self._global_step = global_step
        self._before_save = before_save
        self._manager_factory = manager_factory or tf.train.CheckpointManager
        self._is_chief = distribution.is_chief(strategy)
        self._run_dir = run_dir.RunDirectory(model_dir)
        self._managers = {name: self._make_manager(name) for name in _PREFIXES}
        self._restored = None

    def _directory(self, checkpoint):
        return self._run_dir.checkpoint_dir(checkpoint)

    def _make_manager(self, checkpoint):
        return self._manager_factory(
            self._state,
            distribution.worker_dir(
                self._strategy, self._model_dir, run_dir.CHECKPOINT_DIRS[checkpoint]
            ),
            max_to_keep=self._keep if checkpoint == "latest" else 1,
            checkpoint_name=_PREFIXES[checkpoint],
        )

    def has_checkpoint(self):
        """Whether the run has any 'latest' checkpoint file (readable or not)."""
        return bool(checkpoint_candidates(self._directory("latest")))

    def restore(self, checkpoint="latest"):
        """Restores the newest readable 'latest' or 'best' checkpoint.

        Unreadable newer checkpoints are skipped with a warning (`repair`
        moves them aside).

        Returns:
            The checkpoint path restored, or None when there is none (the
            freshly initialised state is kept).

        Raises:
            ValueError: if `checkpoint` is not 'latest' or 'best'.
            CheckpointCorruptedError: if checkpoints exist but none is readable.
        """
        if checkpoint not in _PREFIXES:
            raise ValueError(
                "Invalid value for argument `checkpoint`. Expected 'latest' or "
                f"'best'. Received: checkpoint={checkpoint!r}"
            )
        directory = self._directory(checkpoint)

        def restore(path):
            _read_every_tensor(path)  # A bad file raises before any state changes.
            self._state.restore(path).assert_existing_objects_matched()
            return int(self._global_step.numpy())

        path, failures = checkpoint_fallback.restore_newest(
            directory, checkpoint_candidates(directory), restore
        )
        if path is not None and checkpoint == "latest":
            self._restored = (path, failures)
        return path

    def repair(self):
        """Chief, under the lock, after `restore('latest')`: tidies the directories.

        Removes the files of interrupted checkpoint writes, moves the
        unreadable checkpoints `restore` skipped to `<dir>/corrupted/` and points
        the state file at the checkpoint actually restored, so that the managers
        and `tf.train.latest_checkpoint` agree with the restored state.
        """
        if not self._is_chief:
            return
        for checkpoint in _PREFIXES:
            removed = remove_partial_checkpoint_files(self._directory(checkpoint))
            if removed:
                logging.warning(
                    "Removed the partial files of an interrupted checkpoint "
                    "write: %s", ", ".join(removed),
                )
        if self._restored is None:
            return
        path, failures = self._restored
        self._restored = None
        directory = self._directory("latest")
        for bad, _ in failures:
            target = _quarantine_checkpoint(bad)
            logging.warning("Moved the unreadable checkpoint %s to %s.", bad, target)
        state = None if failures else _read_checkpoint_state(directory)
        if state is None or os.path.basename(state.model_checkpoint_path) != (
            os.path.basename(path)
        ):
            valid = [
                p for p in checkpoint_candidates(directory)
                if checkpoint_step(p) <= checkpoint_step(path)
            ][: self._keep]
            # Relative names, as CheckpointManager writes them.
            tf.compat.v1.train.update_checkpoint_state(
                directory, os.path.basename(path),
                all_model_checkpoint_paths=[os.path.basename(p) for p in valid[::-1]],
            )
            self._managers["latest"] = self._make_manager("latest")

    def save(self, checkpoint, step):
        """Saves a 'latest' or 'best' checkpoint numbered `step`.

        Returns:
            The checkpoint path.

        Raises:
            ModelDirWriteError: if the write fails (the partial files are
                removed; the previous checkpoints are intact).
        """
        # Every worker must take part in a save (it may run collectives).
        self._before_save()
        manager = self._managers[checkpoint]
        try:
            path = manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            with contextlib.suppress(OSError, tf.errors.OpError):
                remove_partial_checkpoint_files(manager.directory)
            kept = ", ".join(manager.checkpoints) or "none"
            raise errors.ModelDirWriteError(
                f"Could not write the checkpoint of step {step} in "
                f"{manager.directory} ({errors.one_line(error)}). The previous "
                f"checkpoints are intact: {kept}. Free disk space or make the "
                "directory writable, then rerun to resume."
            ) from None
        if not self._is_chief:
            tf.io.gfile.rmtree(os.path.dirname(path))
        return path

    def last_good_message(self):
        """A sentence naming the newest 'latest' checkpoint (for error messages)."""
        path = tf.train.latest_checkpoint(self._directory("latest"))
        return checkpoint_fallback.last_good_message(
            path, None if path is None else checkpoint_step(path)
        )


def checkpoint_path(model_dir, checkpoint="best"):
    """Resolves a checkpoint of a run.

    Args:
        model_dir: str, a run directory written by the trainer.
        checkpoint: 'best' (best validation accuracy), 'latest', or an explicit
            checkpoint prefix path.

    Returns:
        str, the checkpoint prefix.

    Raises:
        ValueError: if there is no such checkpoint.
    """
    if checkpoint in run_dir.CHECKPOINTS:
        path = tf.train.latest_checkpoint(
            run_dir.RunDirectory(model_dir).checkpoint_dir(checkpoint)
        )
    else:
        path = checkpoint if tf.io.gfile.exists(f"{checkpoint}.index") else None
    if path is None:
        raise ValueError(
            f"Invalid value for argument `checkpoint`. Expected one of "
            f"{run_dir.CHECKPOINTS} (existing in {model_dir!r}) or a checkpoint "
            f"prefix. Received: checkpoint={checkpoint!r}"
        )
    return path


def restore_model_weights(model, model_dir, checkpoint="best"):
    """Restores the model weights of a run's checkpoint into `model`.

    Args:
        model: a `keras.Model` of the run's architecture.
        model_dir, checkpoint: see `checkpoint_path`.

    Returns:
        A tuple (checkpoint path, step).

    Raises:
        ValueError: if there is no such checkpoint, or it does not hold the
            weights of `model`.
    """
    path = checkpoint_path(model_dir, checkpoint)
    step = tf.Variable(0, dtype=tf.int64)
    try:
        tf.train.Checkpoint(model=model, global_step=step).read(
            path
        ).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise ValueError(
            f"The checkpoint {path} does not match model {model.name!r}: "
            f"{errors.one_line(error)}"
        ) from None
    return path, int(step.numpy())


def remove_older_checkpoints(model_dir):
    """Deletes every 'latest' checkpoint of a finished run but the newest.

    The newest (which a longer rerun resumes from) and the 'best' checkpoint
    stay; the `checkpoint` state file then lists the newest only.

    Returns:
        The removed checkpoint prefixes.
    """
    directory = run_dir.RunDirectory(model_dir).checkpoint_dir("latest")
    newest = tf.train.latest_checkpoint(directory)
    if newest is None:
        return []
    older = [prefix for prefix in checkpoint_candidates(directory) if prefix != newest]
    name = os.path.basename(newest)  # Relative, as the CheckpointManager writes it.
    tf.compat.v1.train.update_checkpoint_state(
        directory, name, all_model_checkpoint_paths=[name])
    for prefix in older:
        for path in tf.io.gfile.glob(f"{prefix}.index") + tf.io.gfile.glob(f"{prefix}.data-*"):
            tf.io.gfile.remove(path)
    return older

"""Checkpoints of a run: restore with fallback, repair, quarantine and saving.

Checkpoints are written by a `tf.train.CheckpointManager` (or an injected
factory with its signature), which writes the data files first and then
atomically replaces the small `checkpoint` index file; an interrupted write
therefore never becomes the latest checkpoint. An unreadable checkpoint is
skipped on restore and moved to `<dir>/corrupted/` by `repair`. With
`steps.py` and `distribution.py`, this is the TensorFlow-specific part of the
training loop.
"""

import contextlib
import os
import re

from absl import logging
import tensorflow as tf

from low_rank_local_connectivity.training import distribution
from low_rank_local_connectivity.training import errors
from low_rank_local_connectivity.training import run_dir

# Kind -> (sub-directory of model_dir, checkpoint name).
KINDS = {
    "latest": (run_dir.CHECKPOINT_DIR, "ckpt"),
    "best": (run_dir.BEST_DIR, "best"),
}


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
        checkpoint: the `tf.train.Checkpoint` of the run's state; it must
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

    def __init__(self, checkpoint, model_dir, strategy, keep, global_step,
                 before_save=lambda: None, manager_factory=None):
        self._checkpoint = checkpoint
        self._model_dir = model_dir
        self._strategy = strategy
        self._keep = keep
        self._global_step = global_step
        self._before_save = before_save
        self._manager_factory = manager_factory or tf.train.CheckpointManager
        self._is_chief = distribution.is_chief(strategy)
        self._managers = {kind: self._make_manager(kind) for kind in KINDS}
        self._restored = {}

    def _directory(self, kind):
        return os.path.join(self._model_dir, KINDS[kind][0])

    def _make_manager(self, kind):
        subdir, name = KINDS[kind]
        return self._manager_factory(
            self._checkpoint,
            distribution.worker_dir(self._strategy, self._model_dir, subdir),
            max_to_keep=self._keep if kind == "latest" else 1,
            checkpoint_name=name,
        )

    def restore(self, kind="latest"):
        """Restores the newest readable 'latest' or 'best' checkpoint.

        Unreadable newer checkpoints are skipped with a warning (`repair`
        moves them aside).

        Returns:
            The checkpoint path restored, or None when there is none (the
            freshly initialised state is kept).

        Raises:
            ValueError: if `kind` is not 'latest' or 'best'.
            CheckpointCorruptedError: if checkpoints exist but none is readable.
        """
        if kind not in KINDS:
            raise ValueError(
                "Invalid value for argument `which`. Expected 'latest' or "
                f"'best'. Received: {kind!r}"
            )
        directory = self._directory(kind)
        candidates = checkpoint_candidates(directory)
        failures = []
        for path in candidates:
            try:
                _read_every_tensor(path)
            except Exception as error:  # TF raises many types for bad files.
                failures.append((path, errors.one_line(error)))
                logging.warning(
                    "Checkpoint %s is unreadable (%s); falling back to the "
                    "previous one.", path, failures[-1][1],
                )
                continue
            self._checkpoint.restore(path).assert_existing_objects_matched()
            step = int(self._global_step.numpy())
            if failures:
                logging.warning(
                    "Resuming from %s (step %d), the newest valid checkpoint, "
                    "instead of the unreadable %s.", path, step,
                    ", ".join(p for p, _ in failures),
                )
            logging.info("Restored %s (step %d).", path, step)
            self._restored[kind] = (path, failures, candidates)
            return path
        if failures:
            raise errors.CheckpointCorruptedError(
                f"No checkpoint in {directory} is readable ("
                + "; ".join(f"{p}: {reason}" for p, reason in failures)
                + "). Training does not restart from step 0 by itself: move "
                f"{directory} away to start afresh, or put back a backup."
            )
        return None

    def repair(self):
        """Chief, under the lock: tidies the checkpoint directories.

        Removes the files of interrupted checkpoint writes, moves unreadable
        checkpoints found by `restore` to `<dir>/corrupted/` and points the
        state file at the checkpoint actually restored, so that the managers
        and `tf.train.latest_checkpoint` agree with the restored state.
        """
        if not self._is_chief:
            return
        restored = self._restored.get("latest")
        directory = self._directory("latest")
        if restored is not None and checkpoint_candidates(directory) != restored[2]:
            self.restore("latest")  # Changed since construction: redo.
            restored = self._restored["latest"]
        for kind in KINDS:
            removed = remove_partial_checkpoint_files(self._directory(kind))
            if removed:
                logging.warning(
                    "Removed the partial files of an interrupted checkpoint "
                    "write: %s", ", ".join(removed),
                )
        if restored is None:
            return
        path, failures, _ = restored
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
        self._restored.pop("latest")

    def save(self, kind, step):
        """Saves a 'latest' or 'best' checkpoint numbered `step`.

        Returns:
            The checkpoint path.

        Raises:
            ModelDirWriteError: if the write fails (the partial files are
                removed; the previous checkpoints are intact).
        """
        # Every worker must take part in a save (it may run collectives).
        self._before_save()
        manager = self._managers[kind]
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
        if path is None:
            return "No checkpoint was written before."
        return (
            f"The last good checkpoint, {path}, is kept (step "
            f"{checkpoint_step(path)})."
        )

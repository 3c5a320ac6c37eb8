"""What a run does with unreadable checkpoints, whatever their format.

The newest readable checkpoint is restored; the unreadable ones newer than it
are named in warnings (and later moved aside by the format's `repair`); when
none is readable the run stops instead of restarting from step 0. Both
`checkpointing.py` (TensorFlow) and `orbax_checkpointing.py` (JAX) restore
through `restore_newest`.
"""

from absl import logging

from low_rank_local_connectivity.training import errors


def restore_newest(directory, candidates, restore):
    """Restores the newest readable checkpoint of `candidates`.

    Args:
        directory: str, where the candidates are (for messages).
        candidates: checkpoint paths, newest first.
        restore: function `path -> step` that restores a checkpoint, or
            raises if it cannot be read (before changing any state).

    Returns:
        (path restored or None when there is no candidate, list of
        (unreadable path, reason) skipped).

    Raises:
        CheckpointCorruptedError: if candidates exist but none is readable.
    """
    failures = []
    for path in candidates:
        try:
            step = restore(path)
        except Exception as error:  # Every format raises many types for bad files.
            failures.append((path, errors.one_line(error)))
            logging.warning(
                "Checkpoint %s is unreadable (%s); falling back to the "
                "previous one.", path, failures[-1][1],
            )
            continue
        if failures:
            logging.warning(
                "Resuming from %s (step %d), the newest valid checkpoint, "
                "instead of the unreadable %s.", path, step,
                ", ".join(p for p, _ in failures),
            )
        logging.info("Restored %s (step %d).", path, step)
        return path, failures
    if failures:
        raise errors.CheckpointCorruptedError(
            f"No checkpoint in {directory} is readable ("
            + "; ".join(f"{p}: {reason}" for p, reason in failures)
            + "). Training does not restart from step 0 by itself: move "
            f"{directory} away to start afresh, or put back a backup."
        )
    return None, failures


def last_good_message(path, step):
    """A sentence naming the newest 'latest' checkpoint (for error messages)."""
    if path is None:
        return "No checkpoint was written before."
    return f"The last good checkpoint, {path}, is kept (step {step})."

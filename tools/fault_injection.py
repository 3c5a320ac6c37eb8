"""Fault injection for the reliability campaign and tests (not shipped).

Every fault plugs into a run through its public seams: controller callbacks
(`training.Callback`), the input transform and the checkpoint manager factory
of `training.train_and_evaluate`.

A `PhaseTracker` callback follows a run: it knows whether the process is in a
training step, a checkpoint write, an evaluation or an export, and can SIGKILL
the process at a random moment inside a chosen phase, recording the phase the
kill actually landed in. Other faults are injected the same way: NaN inputs
from a given step (`nan_inputs`), checkpoint writes that fail with "No space
left on device" (`disk_full_checkpoints`), slowed-down steps (`SlowSteps`, to
give a second trainer time to meet the first), a call after a given step
(`AfterStep`). `tools/child_run.py` runs a trainer in a child process with the
faults of a spec.

The checks (`checkpoint_report`, `metrics_report`, `corrupt_checkpoint`) are
used by `tools/fault_campaign.py` and `tests/test_reliability.py` to verify
a `model_dir` after the faults.
"""

import contextlib
import errno
import json
import os
import random
import re
import signal
import threading
import time

import numpy as np

from low_rank_local_connectivity import training

PHASES = ("step", "checkpoint", "evaluation", "export")
CORRUPTIONS = ("truncate_data", "flip_data", "truncate_index", "delete_data")


def append_record(path, record):
    """Appends one JSON line to `path` and flushes it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(path):
    """The JSON lines of `path` (a list, empty when the file is absent)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class PhaseTracker(training.Callback):
    """Tracks the phase of a trainer process and kills it inside a phase.

    It is a controller callback: pass it in
    `train_and_evaluate(..., callbacks=[tracker])`. It records a 'start' event
    (with the restored step) when training begins.

    Args:
        record: optional str, JSON-lines file receiving the kill record.
    """

    def __init__(self, record=None):
        self.record = record
        self.phase = "startup"
        self.step = None
        self.counts = {phase: 0 for phase in PHASES}
        self._kill = None
        self._active = None
        self._lock = threading.Lock()

    def arm_kill(self, phase, occurrence, delay):
        """SIGKILLs this process `delay` s into the `occurrence`-th `phase`.

        Raises:
            ValueError: for an unknown phase or a non-positive occurrence.
        """
        if phase not in PHASES:
            raise ValueError(
                f"Invalid value for argument `phase`. Expected one of {PHASES}. "
                f"Received: {phase!r}"
            )
        if int(occurrence) < 1 or delay < 0:
            raise ValueError(
                "Invalid values for arguments `occurrence` and `delay`. "
                "Expected occurrence >= 1 and delay >= 0. Received: "
                f"{occurrence}, {delay}"
            )
        self._kill = dict(phase=phase, occurrence=int(occurrence), delay=float(delay))

    def _fire(self, token):
        with self._lock:
            if self._active is not token:
                return  # The phase ended while this timer was starting.
            if self.record:
                append_record(self.record, dict(
                    event="kill", target=self._kill["phase"], landed=self.phase,
                    step=self.step, delay=self._kill["delay"], time=time.time(),
                ))
            os.kill(os.getpid(), signal.SIGKILL)

    @contextlib.contextmanager
    def in_phase(self, phase):
        """Context of one entry into `phase` (arms / disarms the kill)."""
        self.counts[phase] += 1
        self.phase = phase
        kill = self._kill
        timer = None
        if kill and kill["phase"] == phase and self.counts[phase] >= kill["occurrence"]:
            token = self._active = object()
            if kill["delay"] <= 0.0005:
                self._fire(token)
            timer = threading.Timer(kill["delay"], self._fire, args=(token,))
            timer.daemon = True
            timer.start()
        try:
            yield
        finally:
            with self._lock:
                self._active = None
                self.phase = "other"
            if timer is not None:
                timer.cancel()
                kill["delay"] /= 2  # The phase ended first: aim earlier.

    # The controller's callbacks: each phase is entered in its `*_begin`
    # callback and left in its `*_end` callback.

    def _enter(self, phase):
        self._phase_context = self.in_phase(phase)
        self._phase_context.__enter__()

    def _leave(self):
        self._phase_context.__exit__(None, None, None)

    def on_train_begin(self, controller):
        if self.record:
            append_record(self.record, dict(
                event="start", pid=os.getpid(), restored_step=controller.step,
                time=time.time(),
            ))

    def on_train_batch_begin(self, controller, step):
        self._enter("step")

    def on_train_batch_end(self, controller, step, logs):
        # After the step's outputs were read: the step is asynchronous until then.
        self._leave()
        self.step = step

    def on_checkpoint_begin(self, controller, checkpoint, step):
        self._enter("checkpoint")

    def on_checkpoint_end(self, controller, checkpoint, step, path):
        self._leave()

    def on_evaluate_begin(self, controller, split):
        self._enter("evaluation")

    def on_evaluate_end(self, controller, split, metrics):
        self._leave()


def nan_inputs(from_step):
    """An input transform making the training images NaN from step `from_step` on."""

    def transform(split, dataset):
        import tensorflow as tf

        if split != "train":
            return dataset

        def poison(index, batch):
            images, labels, mask = batch
            images = tf.where(
                index >= from_step - 1, tf.fill(tf.shape(images), np.nan), images
            )
            return images, labels, mask

        return dataset.enumerate().map(poison)

    return transform


class SlowSteps(training.Callback):
    """Sleeps `seconds` after every training step."""

    def __init__(self, seconds):
        self.seconds = seconds

    def on_train_batch_end(self, controller, step, logs):
        time.sleep(self.seconds)


class AfterStep(training.Callback):
    """Calls `function(controller)` after training step `step`."""

    def __init__(self, step, function):
        self.step = step
        self.function = function

    def on_train_batch_end(self, controller, step, logs):
        if step == self.step:
            self.function(controller)


def disk_full_checkpoints(from_step):
    """A `checkpoint_manager_factory` whose writes fail as on a full disk.

    Checkpoint writes numbered `from_step` or more fail with ENOSPC after a
    partial data file is written, as a full disk would leave it.
    """

    import tensorflow as tf

    class DiskFullCheckpointManager(tf.train.CheckpointManager):

        def __init__(self, checkpoint, directory, *, checkpoint_name, **kwargs):
            super().__init__(checkpoint, directory,
                             checkpoint_name=checkpoint_name, **kwargs)
            self.checkpoint_name = checkpoint_name

        def save(self, checkpoint_number=None, **kwargs):
            if checkpoint_number is not None and checkpoint_number >= from_step:
                prefix = os.path.join(
                    self.directory, f"{self.checkpoint_name}-{checkpoint_number}_temp"
                )
                tf.io.gfile.makedirs(prefix)
                part = "part-00000-of-00001.data-00000-of-00001"
                with open(os.path.join(prefix, part), "wb") as f:
                    f.write(b"\0" * 1000)
                raise tf.errors.ResourceExhaustedError(
                    None, None, f"{prefix}: {os.strerror(errno.ENOSPC)}"
                )
            return super().save(checkpoint_number=checkpoint_number, **kwargs)

    return DiskFullCheckpointManager


def random_kill(rng, phase, max_occurrence, typical_seconds):
    """A random kill spec: occurrence in [1, max_occurrence], delay in
    [0, typical_seconds]."""
    return dict(
        phase=phase,
        occurrence=rng.randint(1, max_occurrence),
        delay=rng.uniform(0.0, typical_seconds),
    )


# ----------------------------------------------------------------------------
# Checks of a model_dir.


def partial_checkpoint_files(directory):
    """Leftovers of interrupted writes in a checkpoint directory.

    Returns:
        sorted list of names: TensorFlow temporary files and data files
        without an index.
    """
    if not os.path.isdir(directory):
        return []
    names = os.listdir(directory)
    indexed = {n[: -len(".index")] for n in names if n.endswith(".index")}
    return sorted(
        n for n in names
        if "_temp" in n or ".tempstate" in n
        or (".data-" in n and n.split(".data-")[0] not in indexed)
    )


def checkpoint_report(directory):
    """Reads every checkpoint of a directory completely.

    Returns:
        dict with 'listed' (prefixes in the state file, oldest first),
        'latest' (the state's latest or None), 'complete' (steps with an
        index), 'readable' (steps whose every tensor reads back),
        'unreadable' ({step: reason}) and 'partial' (see
        `partial_checkpoint_files`).
    """
    import tensorflow as tf

    state = None
    with contextlib.suppress(Exception):
        state = tf.train.get_checkpoint_state(directory)
    report = dict(
        listed=list(state.all_model_checkpoint_paths) if state else [],
        latest=state.model_checkpoint_path if state else None,
        complete=[], readable=[], unreadable={},
        partial=partial_checkpoint_files(directory),
    )
    if not os.path.isdir(directory):
        return report
    for name in sorted(os.listdir(directory)):
        match = re.fullmatch(r".*-(\d+)\.index", name)
        if not match:
            continue
        step = int(match.group(1))
        report["complete"].append(step)
        try:
            reader = tf.train.load_checkpoint(os.path.join(directory, name[:-6]))
            for key in reader.get_variable_to_shape_map():
                reader.get_tensor(key)
            report["readable"].append(step)
        except Exception as error:  # Any failure to read counts.
            report["unreadable"][step] = f"{type(error).__name__}: {error}"[:200]
    report["complete"].sort()
    report["readable"].sort()
    return report


def metrics_report(model_dir, train_steps, eval_every_steps):
    """Compares `metrics.jsonl` with the evaluations a run must record.

    Returns:
        dict with 'expected' and 'found' ((split, step) lists), 'missing',
        'duplicates' and 'unexpected'.
    """
    path = os.path.join(model_dir, "metrics.jsonl")
    found = [(l["split"], l["step"]) for l in read_records(path)]
    steps = sorted(set(range(eval_every_steps, train_steps + 1, eval_every_steps))
                   | {train_steps})
    expected = [("valid", s) for s in steps] + [("test", train_steps)]
    return dict(
        expected=expected,
        found=found,
        missing=[e for e in expected if e not in found],
        duplicates=sorted({f for f in found if found.count(f) > 1}),
        unexpected=[f for f in found if f not in expected],
    )


def corrupt_checkpoint(prefix, mode, seed=0):
    """Damages a checkpoint on disk.

    Args:
        prefix: str, checkpoint prefix ('.../ckpt-25').
        mode: one of `CORRUPTIONS`: 'truncate_data' (cut the data file in
            half), 'flip_data' (invert 64 bytes in the middle of the data
            file), 'truncate_index' (cut the index file in half),
            'delete_data' (remove the data file).
        seed: int, seed of the flipped position.

    Raises:
        ValueError: for an unknown mode.
    """
    data = f"{prefix}.data-00000-of-00001"
    index = f"{prefix}.index"
    if mode not in CORRUPTIONS:
        raise ValueError(
            f"Invalid value for argument `mode`. Expected one of {CORRUPTIONS}. "
            f"Received: {mode!r}"
        )
    if mode == "delete_data":
        os.remove(data)
        return
    path = index if mode == "truncate_index" else data
    with open(path, "rb") as f:
        content = bytearray(f.read())
    if mode == "flip_data":
        start = random.Random(seed).randrange(len(content) // 4, len(content) // 2)
        for i in range(start, start + 64):
            content[i] ^= 0xFF
    else:
        content = content[: len(content) // 2]
    with open(path, "wb") as f:
        f.write(bytes(content))

"""Fault injection for the reliability campaign and tests (not shipped).

Every fault plugs into the trainer through its public seams: training hooks
(`training.Hook`) and the injected checkpoint manager
(`Trainer(checkpoint_manager_factory=...)`).

A trainer runs in a child process (`run_child`, driven by a JSON spec) whose
loop is followed by a `PhaseTracker` hook: it knows whether the
process is in a training step, a checkpoint write, an evaluation or an
export, and can SIGKILL the process at a random moment inside a chosen
phase, recording the phase the kill actually landed in. Other faults are
injected the same way: NaN inputs from a given step, checkpoint writes that
fail with "No space left on device", slowed-down steps (to give a second
trainer time to meet the first).

The checks (`checkpoint_report`, `metrics_report`, `corrupt_checkpoint`) are
used by `scripts/fault_campaign.py` and `tests/test_reliability.py` to verify
a `model_dir` after the faults.

Spec of `run_child` (a dict, every key optional except the first two):

- `model_dir` (str), `overrides` (dict of flattened config fields; lists are
  turned into tuples), `preset` (default 'mnist_small_lrlc');
- `record` (str): a JSON-lines file receiving the child's events ('start'
  with the restored step, 'kill' with the target and landed phases, 'done');
- `kill` (dict): `phase` (one of `PHASES`), `occurrence` (1-based entry into
  the phase that arms the kill) and `delay` (seconds after the entry); when
  the phase ends before the delay, the kill is re-armed at the next entry
  with half the delay, so that it lands inside the phase;
- `export` (bool): export the run (`export.export_model`, 'latest'
  checkpoint) after training;
- `nan_from_step` (int): training images become NaN from that step on;
- `fail_writes_from_step` (int): checkpoint writes fail with ENOSPC from
  that step on;
- `step_sleep` (float): seconds slept after every training step.
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
import tensorflow as tf

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


class PhaseTracker(training.Hook):
    """Tracks the phase of a trainer process and kills it inside a phase.

    It is a training hook: pass it in `Trainer(..., hooks=[tracker])`.

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

    # The training loop's hooks (`training.hooks`): each phase is entered in
    # its `before_*` hook and left in its `after_*` hook.

    def _enter(self, phase):
        self._phase_context = self.in_phase(phase)
        self._phase_context.__enter__()

    def _leave(self):
        self._phase_context.__exit__(None, None, None)

    def before_step(self, trainer, step):
        self._enter("step")

    def after_step(self, trainer, step, logs):
        # After the step's outputs were read: the step is asynchronous until then.
        self._leave()
        self.step = step

    def before_checkpoint(self, trainer, kind, step):
        self._enter("checkpoint")

    def after_checkpoint(self, trainer, kind, step, path):
        self._leave()

    def before_evaluation(self, trainer, split):
        self._enter("evaluation")

    def after_evaluation(self, trainer, split, metrics):
        self._leave()


class NaNInputs(training.Hook):
    """Makes the training images NaN from step `from_step` on."""

    def __init__(self, from_step):
        self.from_step = from_step

    def transform_dataset(self, split, dataset):
        if split != "train":
            return dataset

        def poison(index, batch):
            images, labels, mask = batch
            images = tf.where(
                index >= self.from_step - 1, tf.fill(tf.shape(images), np.nan), images
            )
            return images, labels, mask

        return dataset.enumerate().map(poison)


class SlowSteps(training.Hook):
    """Sleeps `seconds` after every training step."""

    def __init__(self, seconds):
        self.seconds = seconds

    def after_step(self, trainer, step, logs):
        time.sleep(self.seconds)


class AfterStep(training.Hook):
    """Calls `function(trainer)` after training step `step`."""

    def __init__(self, step, function):
        self.step = step
        self.function = function

    def after_step(self, trainer, step, logs):
        if step == self.step:
            self.function(trainer)


def disk_full_checkpoints(from_step):
    """A `checkpoint_manager_factory` whose writes fail as on a full disk.

    Checkpoint writes numbered `from_step` or more fail with ENOSPC after a
    partial data file is written, as a full disk would leave it.
    """

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


def run_child(spec):
    """Runs a trainer (and an export) with the faults of `spec`.

    Args:
        spec: dict, see the module docstring.

    Returns:
        The results dict of the run.
    """
    from low_rank_local_connectivity import export
    from low_rank_local_connectivity.configs import experiment

    record = spec.get("record")
    tracker = PhaseTracker(record)
    hooks = [tracker]
    if spec.get("nan_from_step"):
        hooks.append(NaNInputs(spec["nan_from_step"]))
    if spec.get("step_sleep"):
        hooks.append(SlowSteps(spec["step_sleep"]))
    factory = None
    if spec.get("fail_writes_from_step"):
        factory = disk_full_checkpoints(spec["fail_writes_from_step"])
    config = experiment.get_config(spec.get("preset", "mnist_small_lrlc"))
    config.update_from_flattened_dict({
        key: tuple(value) if isinstance(value, list) else value
        for key, value in spec["overrides"].items()
    })
    run = training.Trainer(config, spec["model_dir"], hooks=hooks,
                           checkpoint_manager_factory=factory)
    if record:
        append_record(record, dict(event="start", pid=os.getpid(),
                                   restored_step=run.step, time=time.time()))
    if spec.get("kill"):
        tracker.arm_kill(**spec["kill"])
    results = run.train_and_evaluate()
    if spec.get("export"):
        with tracker.in_phase("export"):
            export.export_model(
                spec["model_dir"], os.path.join(spec["model_dir"], "export"),
                checkpoint="latest",
            )
    if record:
        append_record(record, dict(event="done", time=time.time()))
    return results


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

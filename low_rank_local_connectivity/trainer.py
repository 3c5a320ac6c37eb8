"""Estimator-style training and evaluation with a custom `tf.distribute` loop.

A `model_dir` holds everything about a run:

- `config.json`: the resolved experiment configuration.
- `metadata.json`: the dataset metadata (class names, shapes, split sizes).
- `checkpoints/`: the last `train.keep_checkpoints` checkpoints (model,
  optimiser with its slots, step and training time). The position of the
  training input is a function of the step (see `train.resume_input_position`
  in `configs/experiment.py`), so a resumed run continues with the batches an
  uninterrupted run would have used.
- `best/`: the checkpoint with the best validation accuracy and `best.json`
  (its step and metrics).
- `train/`, `valid/`, `test/`: TensorBoard event files (scalars: loss,
  accuracy, learning rate, examples/s, mean gradient norm; images: the
  combining weights of every LRLC layer with fixed combining weights).
- `metrics.jsonl`: one JSON line per evaluation.
- `results.json`: written at the end (best validation and its step, final test
  metrics, parameter count, time, throughput over all steps and without each
  session's first step, which traces the training step).

Starting `train_and_evaluate` again on the same `model_dir` resumes from the
latest checkpoint. Checkpoints are written by `tf.train.CheckpointManager`,
which writes the data files first and then atomically replaces the small
`checkpoint` index file; an interrupted write therefore never becomes the
latest checkpoint. The JSON files are written to a temporary file and renamed.

A `model_dir` whose `config.json` has another model or dataset is refused
(`ModelDirMismatchError`). Other changed fields are named in a warning, and a
changed learning-rate schedule (e.g. a longer `train.train_steps` for a
finished run) in a second one: the new schedule is followed from the restored
step, not the old one continued (docs/design.md §5).

What survives what (`scripts/fault_campaign.py` checks every case):

- A crash or SIGKILL at any moment: the run resumes from the newest readable
  checkpoint; the files of an interrupted checkpoint write are removed;
  evaluations newer than the restored step are dropped from `metrics.jsonl`
  and redone (an evaluation is recorded once per step and split); a best
  checkpoint whose write was interrupted is written again.
- An unreadable newest checkpoint (truncated, corrupted bytes, missing
  file): a warning names it, it is moved to `checkpoints/corrupted/` and the
  run resumes from the previous readable one. When none is readable,
  `CheckpointCorruptedError`: the run never restarts from step 0 by itself.
- A second trainer on a `model_dir` in use: `ModelDirLockedError`
  (`ModelDirLock`: `lock.json` with pid, host and heartbeat; the lock of a
  dead process is taken over).
- A failed write (read-only directory, full disk): `ModelDirWriteError`
  naming the file and the intact previous checkpoints.
- A NaN / infinite loss or weights: `NonFiniteLossError` naming the step and
  the last good checkpoint, which stays the latest.
- An unreadable input shard: `InputDataError` naming the file.

Keras' `model.fit` does not run under `MultiWorkerMirroredStrategy` with
Keras 3, and `tf.estimator` no longer exists, so the loop is written with
`strategy.run` over `distribute_datasets_from_function`, a Keras 3 model and
optimiser, and `tf.train.Checkpoint` (which tracks Keras 3 models and
optimisers, slots included).
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import socket
import threading
import time

from absl import logging
import keras
import ml_collections
import numpy as np
import tensorflow as tf

from low_rank_local_connectivity import data_provider
from low_rank_local_connectivity import layers as lrlc_layers
from low_rank_local_connectivity import models

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
EVAL_SPLITS = ("valid", "test")
CHECKPOINTS = ("best", "latest")

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
BEST_FILE = "best.json"
LOCK_FILE = "lock.json"
CORRUPTED_DIR = "corrupted"

# Checkpoint managers: name -> sub-directory.
_MANAGERS = {"ckpt": CHECKPOINT_DIR, "best": BEST_DIR}

# Top-5 accuracy is reported when there are more classes than this.
_TOP5_MIN_CLASSES = 11


class TrainerError(RuntimeError):
    """Base of the errors that stop a run with an actionable message."""


class NonFiniteLossError(TrainerError):
    """Raised when the training loss or the weights become NaN or infinite."""


class ModelDirLockedError(TrainerError):
    """Raised when another live trainer holds the lock of a `model_dir`."""


class ModelDirWriteError(TrainerError):
    """Raised when a checkpoint or a run file cannot be written."""


class CheckpointCorruptedError(TrainerError):
    """Raised when no checkpoint of a non-empty checkpoint directory is readable."""


class InputDataError(TrainerError):
    """Raised when the input data cannot be read (e.g. a corrupted shard)."""


class ModelDirMismatchError(TrainerError):
    """Raised when a `model_dir` holds a run of another experiment."""


# ----------------------------------------------------------------------------
# Configuration checks.


def _expect(ok, field, value, expected):
    if not ok:
        raise ValueError(
            f"Invalid value for `config.{field}`. Expected {expected}. "
            f"Received: {value!r}"
        )


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float, np.number)) and not isinstance(
        value, bool
    )


def validate_config(config):
    """Checks an experiment configuration before anything is built.

    Args:
        config: `ml_collections.ConfigDict` with the layout of
            `configs/experiment.py`.

    Raises:
        TypeError: if `config` is not a ConfigDict.
        ValueError: naming the first invalid field, its value and what is
            allowed.
    """
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(
            "Invalid type for argument `config`. Expected an "
            f"ml_collections.ConfigDict. Received: {type(config).__name__}"
        )
    for section in ("dataset", "model", "train"):
        _expect(section in config, section, None, "a config section")
    train = config.train
    _expect(_is_int(config.seed), "seed", config.seed, "an integer")
    _expect(
        isinstance(config.dataset.name, str) and config.dataset.name,
        "dataset.name", config.dataset.name, "a dataset name",
    )
    _expect(
        _is_int(config.dataset.shuffle_buffer_size)
        and config.dataset.shuffle_buffer_size > 0,
        "dataset.shuffle_buffer_size", config.dataset.shuffle_buffer_size,
        "a positive integer",
    )
    for field in (
        "batch_size", "eval_batch_size", "train_steps", "eval_every_steps",
        "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    ):
        value = train[field]
        _expect(_is_int(value) and value > 0, f"train.{field}", value,
                "a positive integer")
    opt = train.optimizer
    _expect(opt.name in OPTIMIZERS, "train.optimizer.name", opt.name,
            f"one of {OPTIMIZERS}")
    _expect(_is_number(opt.learning_rate) and opt.learning_rate > 0,
            "train.optimizer.learning_rate", opt.learning_rate,
            "a positive number")
    _expect(_is_number(opt.momentum) and 0 <= opt.momentum < 1,
            "train.optimizer.momentum", opt.momentum, "a number in [0, 1)")
    for field in ("weight_decay", "clipnorm"):
        _expect(_is_number(opt[field]) and opt[field] >= 0,
                f"train.optimizer.{field}", opt[field],
                "a non-negative number (0 disables it)")
    schedule = train.schedule
    _expect(schedule.name in SCHEDULES, "train.schedule.name", schedule.name,
            f"one of {SCHEDULES}")
    _expect(
        _is_int(schedule.warmup_steps)
        and 0 <= schedule.warmup_steps <= train.train_steps,
        "train.schedule.warmup_steps", schedule.warmup_steps,
        f"an integer in [0, train.train_steps={train.train_steps}]",
    )
    boundaries = tuple(schedule.boundaries)
    _expect(
        all(_is_int(b) and b > 0 for b in boundaries)
        and list(boundaries) == sorted(set(boundaries)),
        "train.schedule.boundaries", boundaries,
        "increasing positive step numbers",
    )
    _expect(_is_number(schedule.decay_rate) and schedule.decay_rate > 0,
            "train.schedule.decay_rate", schedule.decay_rate,
            "a positive number")
    _expect(
        _is_number(schedule.end_learning_rate_fraction)
        and 0 <= schedule.end_learning_rate_fraction <= 1,
        "train.schedule.end_learning_rate_fraction",
        schedule.end_learning_rate_fraction, "a number in [0, 1]",
    )
    _expect(
        _is_number(train.label_smoothing) and 0 <= train.label_smoothing < 1,
        "train.label_smoothing", train.label_smoothing, "a number in [0, 1)",
    )
    _expect(train.distribution_strategy in STRATEGIES,
            "train.distribution_strategy", train.distribution_strategy,
            f"one of {STRATEGIES}")
    _expect(train.mixed_precision in PRECISIONS, "train.mixed_precision",
            train.mixed_precision, f"one of {PRECISIONS}")
    init_from = config.get("init_from")
    if init_from is not None:
        for field in ("model_dir", "checkpoint"):
            value = init_from.get(field)
            _expect(isinstance(value, str) and value, f"init_from.{field}", value,
                    "a non-empty string")


# ----------------------------------------------------------------------------
# Strategy, learning-rate schedule and optimiser.


def enable_determinism():
    """Makes this process's TensorFlow training steps bit-reproducible on CPU.

    `tf.config.experimental.enable_op_determinism()` makes every kernel
    deterministic, but not the schedule: with TensorFlow's default inter-op
    thread pool, kernels of one training step run concurrently, and in the
    paper's 64-filter networks (batch norm, global pooling and an LRLC layer) the
    gradients then differ in their last bits from run to run, and from call to
    call within one process (measured: 0 of 15 repeated gradient evaluations
    agree; oneDNN on or off, the hand-written gradients or autodiff alike; one
    intra-op thread does not help, one inter-op thread does). So this also runs
    one kernel at a time (`set_inter_op_parallelism_threads(1)`); each kernel
    still uses every intra-op thread (README, "Reliability").

    The thread pool is fixed when TensorFlow's runtime starts, so this must run
    before the first TensorFlow op of the process, or the process must have been
    started with `TF_NUM_INTEROP_THREADS=1`.

    Raises:
        TrainerError: the runtime already started with more inter-op threads.
    """
    tf.config.experimental.enable_op_determinism()
    if (
        os.environ.get("TF_NUM_INTEROP_THREADS") == "1"
        or tf.config.threading.get_inter_op_parallelism_threads() == 1
    ):
        return
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        raise TrainerError(
            "`config.train.deterministic=True` needs TensorFlow's inter-op thread "
            "pool to have 1 thread, but TensorFlow's runtime already started in this "
            "process with another setting. Create the Trainer before running any "
            "TensorFlow op, or start the process with TF_NUM_INTEROP_THREADS=1."
        ) from None


def create_strategy(name="default", tpu_address=""):
    """Creates a `tf.distribute.Strategy`.

    Args:
        name: str, one of `STRATEGIES`:
            - 'default': the current (by default, single-device) strategy.
            - 'mirrored': all local GPUs, or all logical CPU devices when there
              is no GPU (so that logical CPU devices can stand in for GPUs).
            - 'multi_worker_mirrored': synchronous training over the workers
              described by the `TF_CONFIG` environment variable.
            - 'tpu': a TPU found by `TPUClusterResolver(tpu_address)`.
        tpu_address: str, TPU name or `grpc://` address; '' for the
            resolver's default (local TPU VM or the `TPU_NAME` variable).

    Returns:
        The strategy.

    Raises:
        ValueError: if `name` is unknown.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu_address or None
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        f"Invalid value for argument `name`. Expected one of {STRATEGIES}. "
        f"Received: {name!r}"
    )


@keras.saving.register_keras_serializable(package="low_rank_local_connectivity")
class WarmupDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up followed by a constant, step or cosine schedule.

    For step `t` (0-based, the optimiser's iteration count):

    - warm-up, `t < warmup_steps`: `peak * (t + 1) / warmup_steps`;
    - 'constant': `peak`;
    - 'step': `peak * decay_rate ** (number of boundaries <= t)`;
    - 'cosine': with `p = clip((t - warmup_steps) / (total_steps -
      warmup_steps), 0, 1)`, `peak * (f + (1 - f) * (1 + cos(pi p)) / 2)`
      where `f = end_learning_rate_fraction`.

    Args:
        peak_learning_rate: float, the rate after warm-up.
        total_steps: int, length of the run.
        decay: str, one of `SCHEDULES`.
        warmup_steps: int, length of the linear warm-up (0: none).
        boundaries: sequence of int, steps of the 'step' schedule.
        decay_rate: float, factor applied at each boundary ('step').
        end_learning_rate_fraction: float, final rate / peak ('cosine').

    Raises:
        ValueError: if `decay` is unknown.
    """

    def __init__(
        self,
        peak_learning_rate,
        total_steps,
        decay="cosine",
        warmup_steps=0,
        boundaries=(),
        decay_rate=0.1,
        end_learning_rate_fraction=0.0,
    ):
        if decay not in SCHEDULES:
            raise ValueError(
                f"Invalid value for argument `decay`. Expected one of "
                f"{SCHEDULES}. Received: {decay!r}"
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.decay = decay
        self.warmup_steps = int(warmup_steps)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.decay_rate = float(decay_rate)
        self.end_learning_rate_fraction = float(end_learning_rate_fraction)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        peak = self.peak_learning_rate
        if self.decay == "constant":
            rate = keras.ops.full((), peak, "float32")
        elif self.decay == "step":
            passed = sum(
                keras.ops.cast(step >= boundary, "float32")
                for boundary in self.boundaries
            )
            rate = peak * keras.ops.power(self.decay_rate, passed)
        else:
            span = max(1, self.total_steps - self.warmup_steps)
            progress = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
            fraction = self.end_learning_rate_fraction
            rate = peak * (fraction + (1.0 - fraction) * cosine)
        if self.warmup_steps:
            warmup = peak * (step + 1.0) / self.warmup_steps
            rate = keras.ops.where(step < self.warmup_steps, warmup, rate)
        return rate

    def get_config(self):
        return dict(
            peak_learning_rate=self.peak_learning_rate,
            total_steps=self.total_steps,
            decay=self.decay,
            warmup_steps=self.warmup_steps,
            boundaries=self.boundaries,
            decay_rate=self.decay_rate,
            end_learning_rate_fraction=self.end_learning_rate_fraction,
        )


def create_learning_rate_schedule(train_config):
    """Returns the `WarmupDecaySchedule` of `train_config`.

    Args:
        train_config: the `train` section of an experiment config.

    Returns:
        A `WarmupDecaySchedule`.
    """
    schedule = train_config.schedule
    return WarmupDecaySchedule(
        peak_learning_rate=train_config.optimizer.learning_rate,
        total_steps=train_config.train_steps,
        decay=schedule.name,
        warmup_steps=schedule.warmup_steps,
        boundaries=tuple(schedule.boundaries),
        decay_rate=schedule.decay_rate,
        end_learning_rate_fraction=schedule.end_learning_rate_fraction,
    )


def create_optimizer(train_config):
    """Creates the Keras optimiser of `train_config`.

    Decoupled weight decay (`optimizer.weight_decay`) is applied by the Keras
    optimiser to every variable of rank >= 2 once `exclude_from_weight_decay`
    has been called by the trainer (biases and batch-norm parameters are
    excluded). With 'mixed_float16' the optimiser is wrapped in a
    `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling).
    Gradient clipping is done by the trainer on the all-reduced gradient.

    Args:
        train_config: the `train` section of an experiment config.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ValueError: if the optimiser name is unknown.
    """
    opt = train_config.optimizer
    common = dict(
        learning_rate=create_learning_rate_schedule(train_config),
        weight_decay=opt.weight_decay or None,
    )
    if opt.name == "sgd":
        optimizer = keras.optimizers.SGD(
            momentum=opt.momentum, nesterov=opt.nesterov, **common
        )
    elif opt.name in ("adam", "adamw"):
        optimizer_class = (
            keras.optimizers.Adam if opt.name == "adam" else keras.optimizers.AdamW
        )
        optimizer = optimizer_class(
            beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon, **common
        )
    elif opt.name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(
            rho=opt.rho, momentum=opt.momentum, epsilon=opt.epsilon, **common
        )
    else:
        raise ValueError(
            "Invalid value for `config.train.optimizer.name`. Expected one of "
            f"{OPTIMIZERS}. Received: {opt.name!r}"
        )
    if train_config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@contextlib.contextmanager
def _dtype_policy(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_model_config(config, metadata):
    """Fills `num_classes` / `input_shape` of `config.model` from metadata.

    Args:
        config: experiment ConfigDict (modified in place).
        metadata: `data_provider.DatasetMetadata`.

    Raises:
        ValueError: if a given `input_shape` or `num_classes` differs from
            the dataset's.
    """
    with config.unlocked():
        if config.model.get("num_classes") is None:
            config.model.num_classes = metadata.num_classes
        if config.model.get("input_shape") is None:
            config.model.input_shape = tuple(metadata.image_shape)
    for field, expected in (
        ("input_shape", tuple(metadata.image_shape)),
        ("num_classes", metadata.num_classes),
    ):
        value = config.model[field]
        value = tuple(value) if field == "input_shape" else value
        _expect(
            value == expected, f"model.{field}", value,
            f"the {field} of dataset {metadata.name!r}, {expected} (or None "
            "to take it from the dataset)",
        )


def build_model(config, metadata, init_from=None):
    """Builds the Keras model of an experiment config.

    Args:
        config: experiment ConfigDict; `num_classes` / `input_shape` of its
            model section are filled from `metadata` when None.
        metadata: `data_provider.DatasetMetadata`.
        init_from: optional mapping with `model_dir` and `checkpoint` (see
            `checkpoint_path`): the model is initialised from that run's
            checkpoint, before `model.convert` converts it.

    Returns:
        A `keras.Model` built with the dtype policy `train.mixed_precision`.

    Raises:
        ValueError: if the `init_from` checkpoint does not exist or does not
            match the model.
    """
    resolve_model_config(config, metadata)
    initialize = None
    if init_from is not None:
        initialize = functools.partial(
            restore_model, model_dir=init_from["model_dir"],
            checkpoint=init_from["checkpoint"],
        )
    with _dtype_policy(config.train.mixed_precision):
        return models.build_model(config.model, initialize=initialize)


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
    if checkpoint in CHECKPOINTS:
        subdir = BEST_DIR if checkpoint == "best" else CHECKPOINT_DIR
        path = tf.train.latest_checkpoint(os.path.join(model_dir, subdir))
    else:
        path = checkpoint if tf.io.gfile.exists(f"{checkpoint}.index") else None
    if path is None:
        raise ValueError(
            f"Invalid value for argument `checkpoint`. Expected one of "
            f"{CHECKPOINTS} (existing in {model_dir!r}) or a checkpoint prefix. "
            f"Received: {checkpoint!r}"
        )
    return path


def restore_model(model, model_dir, checkpoint="best"):
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
            f"{_one_line(error)}"
        ) from None
    return path, int(step.numpy())


def count_parameters(model):
    """Number of trainable scalars (batch-norm moving statistics excluded)."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


# ----------------------------------------------------------------------------
# Files and summaries.


def _one_line(error):
    """The informative first line of an exception, prefixed with its type.

    TensorFlow's function-node prefixes, `[Op:...]` suffixes and graph
    execution boilerplate are dropped.
    """
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(error))
    text = re.sub(r"\s*\[Op:[^\]]*\]( name: \S*)?", "", text)
    lines = [  # Indented lines are stack frames and source code.
        line.strip() for line in text.splitlines()
        if line.strip() and not line.startswith((" ", "\t")) and not re.match(
            r"(Graph execution error:|Detected at node|<stack traces|\[\[)",
            line.strip(),
        )
    ]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _atomic_write_text(path, text):
    """Writes `text` to a temporary file, then renames it onto `path`.

    Raises:
        ModelDirWriteError: if the file cannot be written (the previous
            content of `path`, if any, is left untouched).
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except (OSError, tf.errors.OpError) as error:
        with contextlib.suppress(OSError, tf.errors.OpError):
            tf.io.gfile.remove(tmp)
        raise ModelDirWriteError(
            f"Could not write {path} ({_one_line(error)}); its previous "
            "version is intact. Free disk space or make the directory "
            "writable, then rerun to resume."
        ) from None


def _checkpoint_step(prefix):
    """The step of a checkpoint prefix 'dir/<name>-<step>' (-1 if none)."""
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def _checkpoint_candidates(directory):
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
    return sorted(prefixes, key=lambda p: (_checkpoint_step(p), p), reverse=True)


def _read_every_tensor(prefix):
    """Reads every tensor of a checkpoint (checksums included), or raises.

    Checking the files before restoring means that an unreadable checkpoint
    never leaves the model half restored.
    """
    reader = tf.train.load_checkpoint(prefix)
    for key in reader.get_variable_to_shape_map():
        reader.get_tensor(key)


def _read_checkpoint_state(directory):
    """The `checkpoint` state proto of a directory, or None (also if corrupt)."""
    try:
        return tf.train.get_checkpoint_state(directory)
    except Exception as error:  # A corrupted state file: a text-proto error.
        logging.warning(
            "Ignoring the unreadable checkpoint state file of %s (%s).",
            directory, _one_line(error),
        )
        return None


def _remove_partial_checkpoint_files(directory):
    """Deletes what an interrupted checkpoint write leaves behind.

    That is TensorFlow's temporary `<prefix>_temp*` shards and temporary
    index files, and data files whose `.index` was never written. Returns the
    paths removed.
    """
    if not tf.io.gfile.isdir(directory):
        return []
    names = tf.io.gfile.listdir(directory)
    indexed = {name[: -len(".index")] for name in names if name.endswith(".index")}
    removed = []
    for name in names:
        name = name.rstrip("/")
        partial = "_temp" in name or ".tempstate" in name or (
            ".data-" in name and name.split(".data-")[0] not in indexed
        )
        if partial:
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
    target = os.path.join(directory, CORRUPTED_DIR)
    tf.io.gfile.makedirs(target)
    for path in tf.io.gfile.glob(f"{prefix}.*"):
        tf.io.gfile.rename(
            path, os.path.join(target, os.path.basename(path)), overwrite=True
        )
    return target


def process_alive(pid):
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, owned by another user.
        return True
    return True


class ModelDirLock:
    """An exclusive lock on a `model_dir`, held by one trainer at a time.

    The lock is the file `<model_dir>/lock.json` holding the owner's pid,
    host name, start time and a heartbeat time that a background thread
    refreshes every `heartbeat_seconds`. It is created atomically (written
    to a private file, then hard-linked to its name, which fails if the name
    exists). An existing lock is stale, and is taken over with a warning, when
    its owner is on this host and its pid is dead (a crashed or killed
    trainer), or when its heartbeat is older than `stale_seconds` (a crashed
    trainer on another host). Otherwise `acquire` raises
    `ModelDirLockedError`. Directories that are not on the local file
    system (e.g. 'gs://') are not locked.

    Args:
        model_dir: str, the directory to lock (created if needed).
        heartbeat_seconds: float, interval of the heartbeat.
        stale_seconds: float, age after which a heartbeat is stale.

    Raises:
        ValueError: if `stale_seconds` is not larger than `heartbeat_seconds`.
    """

    def __init__(self, model_dir, heartbeat_seconds=30.0, stale_seconds=300.0):
        if not 0 < heartbeat_seconds < stale_seconds:
            raise ValueError(
                "Invalid values for arguments `heartbeat_seconds` and "
                "`stale_seconds`. Expected 0 < heartbeat_seconds < "
                f"stale_seconds. Received: {heartbeat_seconds}, {stale_seconds}"
            )
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self._local = "://" not in model_dir
        self._owner = None
        self._stop = threading.Event()
        self._thread = None

    def _read(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # Unreadable: judged by the file's age below.

    def _stale_reason(self, owner):
        """Why the lock held by `owner` is stale, or None if it is live."""
        if not owner:
            try:
                age = time.time() - os.path.getmtime(self.path)
            except OSError:
                return "it disappeared"
            return (f"it is unreadable and {age:.0f} s old"
                    if age > self.heartbeat_seconds else None)
        age = time.time() - float(owner.get("heartbeat", 0))
        if age > self.stale_seconds:
            return f"its heartbeat is {age:.0f} s old"
        if owner.get("hostname") == socket.gethostname() and not process_alive(
            int(owner.get("pid", -1))
        ):
            return f"process {owner.get('pid')} is no longer running"
        return None

    def _write_owner(self, path):
        self._owner["heartbeat"] = time.time()
        with open(path, "w") as f:
            json.dump(self._owner, f)

    def acquire(self):
        """Takes the lock (taking over a stale one).

        Raises:
            ModelDirLockedError: if another live trainer holds it.
            ModelDirWriteError: if the lock file cannot be written.
        """
        if not self._local:
            logging.warning("%s is not local: it is not locked.", self.path)
            return self
        self._owner = dict(
            pid=os.getpid(), hostname=socket.gethostname(), started=time.time(),
            token=f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}",
        )
        private = f"{self.path}.{self._owner['token']}"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._write_owner(private)
            for _ in range(10):
                try:
                    os.link(private, self.path)
                    break
                except FileExistsError:
                    owner = self._read()
                    reason = self._stale_reason(owner) if owner is not None else "gone"
                    if reason is None:
                        raise ModelDirLockedError(
                            f"{os.path.dirname(self.path)} is in use by another "
                            f"trainer (pid {owner.get('pid')} on "
                            f"{owner.get('hostname')}, heartbeat "
                            f"{time.time() - float(owner.get('heartbeat', 0)):.0f}"
                            f" s ago; lock file {self.path}). Wait for it to "
                            "finish or use another model_dir."
                        ) from None
                    self._take_over(owner, reason)
            else:
                raise ModelDirLockedError(
                    f"Could not take the lock {self.path}: it keeps changing."
                )
        except OSError as error:
            raise ModelDirWriteError(
                f"Could not write the lock file {self.path} "
                f"({_one_line(error)}). Make the directory writable."
            ) from None
        finally:
            with contextlib.suppress(OSError):
                os.remove(private)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat, name="model_dir_lock_heartbeat", daemon=True
        )
        self._thread.start()
        return self

    def _take_over(self, owner, reason):
        """Moves a stale lock away unless it changed since it was judged."""
        if owner is None:
            return
        moved = f"{self.path}.stale-{self._owner['token']}"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return  # Another trainer took it over first: try again.
        try:
            with open(moved) as f:
                unchanged = json.load(f) == owner
        except (OSError, ValueError):
            unchanged = owner == {}
        if not unchanged:  # A fresh lock was moved by mistake: put it back.
            with contextlib.suppress(OSError):
                os.link(moved, self.path)
        else:
            logging.warning(
                "Taking over the stale lock %s of pid %s on %s: %s.",
                self.path, owner.get("pid"), owner.get("hostname"), reason,
            )
        os.remove(moved)

    def _beat(self):
        while not self._stop.wait(self.heartbeat_seconds):
            with contextlib.suppress(OSError):
                tmp = f"{self.path}.{self._owner['token']}.beat"
                self._write_owner(tmp)
                os.replace(tmp, self.path)

    def release(self):
        """Releases the lock if this object holds it."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            if self._read() == self._owner:
                with contextlib.suppress(OSError):
                    os.remove(self.path)
        self._owner = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def _read_json_lines(path):
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _plugin_metadata(plugin_name):
    return tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
            plugin_name=plugin_name
        )
    )


# TensorBoard's 'scalars' and 'images' plugins read these tensor summaries
# (the format of `tensorboard.summary.v2`); writing them with the core
# `tf.summary.write` keeps TensorBoard an optional, viewer-only dependency.
_SCALAR_METADATA = _plugin_metadata("scalars")
_IMAGE_METADATA = _plugin_metadata("images")


def write_scalar(name, value, step):
    """Writes a TensorBoard scalar to the default summary writer."""
    tf.summary.write(
        name, tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA
    )


def write_images(name, images, step):
    """Writes images to the default summary writer (TensorBoard format).

    Args:
        name: str, summary tag.
        images: uint8 array (N, H, W, C) with C in {1, 3, 4}.
        step: int.
    """
    images = np.asarray(images, np.uint8)
    height, width = images.shape[1:3]
    encoded = [tf.io.encode_png(image) for image in images]
    tensor = tf.stack([tf.as_string(width), tf.as_string(height)] + encoded)
    tf.summary.write(name, tensor, step=step, metadata=_IMAGE_METADATA)


def lrlc_layers_with_fixed_weights(model):
    """LRLC layers of `model` (nested ones too) whose combining weights are
    fixed (not input dependent)."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, lrlc_layers.LowRankLocallyConnected2D)
        and not layer.get_config()["input_dependent"]
    ]


def combining_weight_images(layer):
    """Renders the combining weights of an LRLC layer as K grey images.

    Args:
        layer: `LowRankLocallyConnected2D` with fixed combining weights.

    Returns:
        uint8 array (K, H_out, W_out, 1); (K, H_out, 1, 1) when only rows are
        shared and (K, 1, W_out, 1) when only columns are. The layer's minimum
        weight is black and its maximum white.
    """
    weights = np.asarray(keras.ops.convert_to_numpy(layer.combining_weights))
    if weights.ndim == 2:
        row_only = layer.get_config()["share_row_combining_weights"]
        weights = weights[:, None, :] if row_only else weights[None, :, :]
    weights = np.moveaxis(weights, -1, 0)[..., None].astype(np.float64)
    low, high = weights.min(), weights.max()
    scaled = (weights - low) / (high - low) if high > low else weights * 0 + 0.5
    return np.round(scaled * 255).astype(np.uint8)


def _new_window():
    return dict(loss=0.0, correct=0.0, count=0.0, steps=0, seconds=0.0, grad_norm=0.0)


def _format_duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in cluster
    )


# ----------------------------------------------------------------------------
# The trainer.


class Trainer:
    """Builds an experiment and trains / evaluates it in a `model_dir`.

    Construction validates the config, creates (or takes) the strategy,
    seeds Python, NumPy and TensorFlow (`keras.utils.set_random_seed(seed)`),
    builds the model and optimiser under the strategy and restores the latest
    checkpoint of `model_dir` if there is one; a new run with
    `config.init_from` starts from the model weights of that run instead
    (`build_model`). The training input pipeline is built when training
    starts, positioned at the restored step.

    Args:
        config: experiment `ml_collections.ConfigDict`
            (see `configs/experiment.py`). It is copied, never modified.
        model_dir: str, directory of the run (created if needed).
        strategy: optional `tf.distribute.Strategy`; by default one is
            created from `config.train.distribution_strategy`.

    Attributes:
        config: the resolved config (model `num_classes` / `input_shape`
            filled in).
        metadata: `data_provider.DatasetMetadata`.
        strategy, model, optimizer: the objects in use.
        is_chief: bool, whether this worker writes the shared files.
        step: int, the number of training steps done.

    Raises:
        ValueError / TypeError: for an invalid config (see `validate_config`)
            or batch sizes not divisible by the number of replicas.
    """

    def __init__(self, config, model_dir, *, strategy=None):
        validate_config(config)
        if not isinstance(model_dir, (str, os.PathLike)) or not str(model_dir):
            raise ValueError(
                "Invalid value for argument `model_dir`. Expected a directory "
                f"path. Received: {model_dir!r}"
            )
        self.config = ml_collections.ConfigDict(config.to_dict())
        self.model_dir = os.fspath(model_dir)
        train = self.config.train
        if train.deterministic:
            enable_determinism()
        self.strategy = strategy or create_strategy(
            train.distribution_strategy, train.tpu_address
        )
        replicas = self.strategy.num_replicas_in_sync
        for field in ("batch_size", "eval_batch_size"):
            if train[field] % replicas:
                raise ValueError(
                    f"Invalid value for `config.train.{field}`. Expected a "
                    f"multiple of the number of replicas ({replicas}). "
                    f"Received: {train[field]}"
                )
        dataset = self.config.dataset
        self._data_kwargs = dict(
            data_dir=dataset.data_dir,
            download=dataset.download,
            manual_dir=dataset.manual_dir,
            translate_to=dataset.translate_to,
            image_size=dataset.image_size,
            value_range=(
                None if dataset.value_range is None else tuple(dataset.value_range)
            ),
        )
        self.metadata = data_provider.get_metadata(dataset.name, **self._data_kwargs)
        for split in data_provider.SPLITS:
            missing = data_provider.find_unreadable_files(
                dataset.name, split, data_dir=dataset.data_dir, read_records=False,
                translate_to=dataset.translate_to, image_size=dataset.image_size,
                value_range=self._data_kwargs["value_range"],
            )
            if missing:
                raise data_provider.DataNotFoundError(
                    f"Split {split!r} of dataset {dataset.name!r} is missing "
                    f"files: {', '.join(path for path, _ in missing)}. Prepare "
                    "the dataset again (delete its folder, then `tfds build` "
                    "or download=True)."
                )
        self.is_chief = _is_chief(self.strategy)
        self._top5 = self.metadata.num_classes >= _TOP5_MIN_CLASSES
        self._loss_scaling = train.mixed_precision == "mixed_float16"

        keras.utils.set_random_seed(self.config.seed)
        # `init_from` only starts a run: a resumed run restores its own checkpoint.
        init_from = self.config.get("init_from")
        if _checkpoint_candidates(os.path.join(self.model_dir, CHECKPOINT_DIR)):
            init_from = None
        with self.strategy.scope():
            self.model = build_model(self.config, self.metadata, init_from)
            self.optimizer = create_optimizer(train)
            self.optimizer.exclude_from_weight_decay(
                var_list=[v for v in self.model.trainable_variables
                          if len(v.shape) < 2]
            )
            self.optimizer.build(self.model.trainable_variables)
            self._global_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            self._train_seconds = tf.Variable(
                0.0, dtype=tf.float64, trainable=False, name="train_seconds",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self._eval_datasets = {}
        self._checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            global_step=self._global_step,
            train_seconds=self._train_seconds,
        )
        self._managers = {name: self._make_manager(name) for name in _MANAGERS}
        self._train_step = self._make_train_step()
        self._eval_step = self._make_eval_step()
        self._sync_statistics = self._make_sync_statistics()
        self._writers = {}
        self._restored = {}
        self._check_same_experiment()
        self.restore("latest")

    # -- Public API. --------------------------------------------------------

    @property
    def step(self):
        return int(self._global_step.numpy())

    def restore(self, which="latest"):
        """Restores the 'latest' or 'best' checkpoint of `model_dir`.

        Args:
            which: 'latest' or 'best'.

        Returns:
            The checkpoint path restored, or None when there is none (the
            freshly initialised state is kept).

        Raises:
            ValueError: if `which` is not 'latest' or 'best'.
        """
        subdirs = {"latest": CHECKPOINT_DIR, "best": BEST_DIR}
        if which not in subdirs:
            raise ValueError(
                "Invalid value for argument `which`. Expected 'latest' or "
                f"'best'. Received: {which!r}"
            )
        directory = os.path.join(self.model_dir, subdirs[which])
        candidates = _checkpoint_candidates(directory)
        failures = []
        for path in candidates:
            try:
                _read_every_tensor(path)
            except Exception as error:  # TF raises many types for bad files.
                failures.append((path, _one_line(error)))
                logging.warning(
                    "Checkpoint %s is unreadable (%s); falling back to the "
                    "previous one.", path, failures[-1][1],
                )
                continue
            self._checkpoint.restore(path).assert_existing_objects_matched()
            if failures:
                logging.warning(
                    "Resuming from %s (step %d), the newest valid checkpoint, "
                    "instead of the unreadable %s.", path, self.step,
                    ", ".join(p for p, _ in failures),
                )
            logging.info("Restored %s (step %d).", path, self.step)
            self._restored[which] = (path, failures, candidates)
            return path
        if failures:
            raise CheckpointCorruptedError(
                f"No checkpoint in {directory} is readable ("
                + "; ".join(f"{p}: {reason}" for p, reason in failures)
                + "). Training does not restart from step 0 by itself: move "
                f"{directory} away to start afresh, or put back a backup."
            )
        return None

    def evaluate(self, split):
        """Evaluates the current model on a split (one full, masked pass).

        Args:
            split: 'valid' or 'test'.

        Returns:
            dict with 'loss' (mean cross-entropy, no label smoothing),
            'accuracy', 'top5_accuracy' (more than 10 classes only) and
            'num_examples' (the number of real examples counted).

        Raises:
            ValueError: if `split` is not 'valid' or 'test'.
        """
        if split not in EVAL_SPLITS:
            raise ValueError(
                f"Invalid value for argument `split`. Expected one of "
                f"{EVAL_SPLITS}. Received: {split!r}"
            )
        if split not in self._eval_datasets:
            self._eval_datasets[split] = self._distributed_dataset(split)
        self._sync_statistics()
        totals = None
        with self._reading(split):
            for images, labels, mask in self._eval_datasets[split]:
                sums = [float(s) for s in self._eval_step(images, labels, mask)]
                totals = (
                    sums if totals is None else [a + b for a, b in zip(totals, sums)]
                )
        loss_sum, correct, top5, count = totals
        metrics = dict(
            loss=loss_sum / count, accuracy=correct / count, num_examples=int(count)
        )
        if self._top5:
            metrics["top5_accuracy"] = top5 / count
        return metrics

    def measure_step_throughput(self, num_steps=20, warmup_steps=2):
        """Examples/s of the compiled training step alone, without input pipeline.

        Runs the trainer's own training step on the first training batch, cached
        in memory and repeated, and converts its outputs to Python floats as the
        training loop does. Compared with the `steady_examples_per_second` of
        `results.json` (the same step fed by the real pipeline) it shows the
        input-pipeline overhead. It trains the model and writes nothing: use it
        on a scratch `model_dir`.

        Args:
            num_steps: timed steps.
            warmup_steps: untimed steps first (the first one traces).

        Returns:
            Examples per second over the timed steps.
        """
        for name, value, low in (("num_steps", num_steps, 1), ("warmup_steps", warmup_steps, 0)):
            if not (_is_int(value) and value >= low):
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected an integer "
                    f">= {low}. Received: {value!r}"
                )
        iterator = iter(self._distributed_dataset("train", one_batch_in_memory=True))
        for _ in range(warmup_steps):
            [float(v) for v in self._train_step(iterator)]
        start = time.perf_counter()
        for _ in range(num_steps):
            [float(v) for v in self._train_step(iterator)]
        seconds = time.perf_counter() - start
        return num_steps * self.config.train.batch_size / seconds

    def train_and_evaluate(self):
        """Trains to `train.train_steps`, validating and checkpointing.

        Validation runs every `train.eval_every_steps` and at the last step;
        the test split is evaluated once at the end. Resumes automatically
        (this object restored the latest checkpoint when it was created).

        Returns:
            The results dict also written to `results.json`.

        The chief holds the `model_dir` lock (`ModelDirLock`) while it runs.

        Raises:
            NonFiniteLossError: if the loss or the weights become NaN or
                infinite; the last good checkpoint stays the latest one.
            ModelDirLockedError: if another live trainer uses `model_dir`.
            ModelDirWriteError: if a checkpoint or run file cannot be
                written; the previous checkpoints are intact.
            InputDataError: if the input data cannot be read.
        """
        lock = ModelDirLock(self.model_dir) if self.is_chief else None
        if lock is not None:
            lock.acquire()
        try:
            self._repair_checkpoints()
            return self._train_and_evaluate()
        finally:
            if lock is not None:
                lock.release()

    def _train_and_evaluate(self):
        train = self.config.train
        start_wall = time.time()
        if self.is_chief:
            tf.io.gfile.makedirs(self.model_dir)
            self._write_config()
            _atomic_write_text(
                os.path.join(self.model_dir, METADATA_FILE),
                json.dumps(dataclasses.asdict(self.metadata), indent=2),
            )
            self._truncate_metrics(self.step)
        best = self._read_best()
        window = _new_window()
        session_start_step = self.step
        # Throughput without the session's first step, which traces the step.
        steady = dict(steps=0, seconds=0.0)
        if self.step < train.train_steps:
            train_iterator = iter(self._distributed_dataset("train", self.step))
            logging.info(
                "Training %s from step %d to %d (%d parameters) in %s.",
                self.config.get("preset", self.config.dataset.name),
                self.step, train.train_steps, count_parameters(self.model),
                self.model_dir,
            )
        while self.step < train.train_steps:
            step_start = time.time()
            with self._reading("train"):
                outputs = self._train_step(train_iterator)
            loss_sum, reg_loss, correct, count, grad_norm = (
                float(v) for v in outputs
            )
            step = self.step
            loss = loss_sum / count + reg_loss
            # With dynamic loss scaling, non-finite gradients are expected:
            # the optimiser skips those steps and lowers the scale.
            if not math.isfinite(loss) or not (
                math.isfinite(grad_norm) or self._loss_scaling
            ):
                self._flush_writers()
                raise NonFiniteLossError(
                    f"Training stopped at step {step}: the loss is {loss} "
                    f"(gradient norm {grad_norm}). {self._last_good_message()} "
                    "Lower config.train.optimizer.learning_rate or set "
                    "config.train.optimizer.clipnorm, then rerun to resume."
                )
            seconds = time.time() - step_start
            self._train_seconds.assign_add(seconds)
            if step > session_start_step + 1:
                steady["steps"] += 1
                steady["seconds"] += seconds
            for key, value in (
                ("loss", loss_sum + reg_loss * count), ("correct", correct),
                ("count", count), ("steps", 1), ("seconds", seconds),
                ("grad_norm", grad_norm),
            ):
                window[key] += value
            if step % train.log_every_steps == 0 or step == train.train_steps:
                self._log_training(step, window)
                window = _new_window()
            evaluated = step % train.eval_every_steps == 0 or step == train.train_steps
            if evaluated or step % train.checkpoint_every_steps == 0:
                self._check_finite_weights(step)
            # Order: evaluation line, checkpoint, then best. A crash in between
            # is repaired on resume: evaluations newer than the restored step
            # are redone, and `_read_best` re-saves a best checkpoint that the
            # crash prevented.
            if evaluated:
                metrics = self._evaluate_and_record("valid", step)
            if evaluated or step % train.checkpoint_every_steps == 0:
                self._save("ckpt", step)
            if evaluated and (
                best is None or metrics["accuracy"] > best["metrics"]["accuracy"]
            ):
                best = dict(step=step, metrics=metrics)
                self._save_best(best)
        if best is None:
            # Nothing was trained in this session and nothing was recorded.
            metrics = self._evaluate_and_record("valid", self.step)
            best = dict(step=self.step, metrics=metrics)
        test_metrics = self._evaluate_and_record("test", self.step)
        train_seconds = float(self._train_seconds.numpy())
        steps = self.step
        results = dict(
            preset=self.config.get("preset"),
            dataset=self.config.dataset.name,
            model=self.config.model.get("name"),
            train_steps=steps,
            batch_size=train.batch_size,
            num_replicas=self.strategy.num_replicas_in_sync,
            num_parameters=count_parameters(self.model),
            best_valid=best,
            test=test_metrics,
            train_seconds=train_seconds,
            examples_per_second=(
                steps * train.batch_size / train_seconds if train_seconds else None
            ),
            steady_examples_per_second=(
                steady["steps"] * train.batch_size / steady["seconds"]
                if steady["seconds"] else None
            ),
            session_steps=steps - session_start_step,
            session_wall_seconds=time.time() - start_wall,
        )
        if self.is_chief:
            _atomic_write_text(
                os.path.join(self.model_dir, RESULTS_FILE),
                json.dumps(results, indent=2),
            )
        self._flush_writers()
        logging.info(
            "Done: best valid accuracy %.4f at step %d, test accuracy %.4f.",
            best["metrics"]["accuracy"], best["step"], test_metrics["accuracy"],
        )
        return results

    # -- Building blocks. ---------------------------------------------------

    def _distributed_dataset(self, split, start_step=0, one_batch_in_memory=False):
        """The distributed input pipeline of a split.

        Training uses one pipeline per worker (`input_context`: sharded,
        per-replica batches). `start_step` steps of batches have already been
        used: with `train.resume_input_position` they are skipped (the run
        sees the batches of an uninterrupted run: exact, at the cost of
        reading them again), otherwise the pipeline restarts with seed
        `seed + start_step`. (Distributed iterators cannot be stored in a
        checkpoint, hence the skip.)

        Evaluation batches are global, padded to full size and masked; the
        strategy splits every batch evenly over the replicas (element-wise
        sharding across workers), so each replica always receives a full
        batch and every real example is counted exactly once.
        """
        config = self.config
        kwargs = dict(
            shuffle_buffer_size=config.dataset.shuffle_buffer_size,
            **self._data_kwargs,
        )
        if split != "train":
            dataset = data_provider.make_dataset(
                config.dataset.name, split, batch_size=config.train.eval_batch_size,
                is_training=False, **kwargs,
            )
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            return self.strategy.experimental_distribute_dataset(
                dataset.with_options(options)
            )
        exact = config.train.resume_input_position

        def dataset_fn(input_context):
            dataset = data_provider.make_dataset(
                config.dataset.name, split, batch_size=config.train.batch_size,
                is_training=True, input_context=input_context,
                seed=config.seed + (0 if exact else start_step), **kwargs,
            )
            if exact and start_step:
                batches_per_step = (
                    input_context.num_replicas_in_sync
                    // input_context.num_input_pipelines
                )
                dataset = dataset.skip(start_step * batches_per_step)
            if one_batch_in_memory:
                dataset = dataset.take(1).cache().repeat()
            return dataset

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _losses(self, images, labels, training, label_smoothing):
        """Returns float32 logits (b, classes) and cross-entropy (b,)."""
        logits = tf.cast(self.model(images, training=training), tf.float32)
        targets = tf.one_hot(labels, self.metadata.num_classes)
        if label_smoothing:
            targets = (
                targets * (1.0 - label_smoothing)
                + label_smoothing / self.metadata.num_classes
            )
        per_example = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
        return logits, per_example

    def _make_train_step(self):
        """Returns a tf.function running one step on the next batch.

        It returns the global sums (cross-entropy, correct predictions, real
        examples), the regularisation loss and the norm of the (unscaled,
        unclipped) all-reduced gradient.
        """
        train = self.config.train
        strategy = self.strategy
        model, optimizer = self.model, self.optimizer
        replicas = strategy.num_replicas_in_sync
        loss_scaling = self._loss_scaling
        clipnorm = train.optimizer.clipnorm

        def compute_gradients(images, labels, mask):
            with tf.GradientTape() as tape:
                logits, per_example = self._losses(
                    images, labels, True, train.label_smoothing
                )
                data_loss = tf.reduce_sum(per_example * mask) / train.batch_size
                reg_loss = (
                    tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
                    if model.losses else tf.constant(0.0)
                )
                # Gradients are summed over replicas: each contributes 1/N of
                # the regulariser.
                loss = data_loss + reg_loss / replicas
                if loss_scaling:
                    loss = optimizer.scale_loss(loss)
            grads = tape.gradient(loss, model.trainable_variables)
            correct = tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels),
                        tf.float32) * mask
            )
            return grads, tf.reduce_sum(per_example * mask), reg_loss, correct

        if train.jit_compile:
            compute_gradients = tf.function(compute_gradients, jit_compile=True)

        def replica_step(images, labels, mask):
            grads, loss_sum, reg_loss, correct = compute_gradients(
                images, labels, mask
            )
            # Sum over replicas here so that clipping sees the true gradient.
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads
            )
            scale = optimizer.dynamic_scale if loss_scaling else 1.0
            grad_norm = tf.linalg.global_norm(grads)
            if clipnorm:
                grads, _ = tf.clip_by_global_norm(
                    grads, clipnorm * scale, use_norm=grad_norm
                )
            # The Keras optimiser sums the gradients over replicas once more:
            # hand it 1/N of the (identical) reduced gradient on each replica.
            grads = [g / replicas for g in grads]
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            sums = (loss_sum, reg_loss / replicas, correct, tf.reduce_sum(mask))
            return sums, grad_norm / tf.cast(scale, grad_norm.dtype)

        @tf.function
        def train_step(iterator):
            images, labels, mask = next(iterator)
            sums, grad_norm = strategy.run(
                replica_step, args=(images, labels, mask)
            )
            self._global_step.assign_add(1)
            return [
                strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for value in sums
            ] + [strategy.reduce(tf.distribute.ReduceOp.MEAN, grad_norm, axis=None)]

        return train_step

    def _make_sync_statistics(self):
        """Averages floating non-trainable model variables over replicas.

        Keras batch normalisation updates its moving statistics from each
        replica's own batch, so replicas drift apart. The moving averages are
        linear in the batch statistics, so averaging the replicas' copies
        (before every evaluation and checkpoint) gives the moving average of
        the replica-averaged batch statistics, and leaves every replica and
        worker with the same state.
        """
        strategy = self.strategy
        variables = [
            v for v in self.model.non_trainable_variables
            if "float" in str(v.dtype)
        ]
        if strategy.num_replicas_in_sync == 1 or not variables:
            return lambda: None

        @tf.function
        def sync_statistics():
            values = strategy.run(
                lambda: [tf.identity(v.value) for v in variables]
            )
            for variable, value in zip(variables, values):
                variable.assign(
                    strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                )

        return sync_statistics

    def _make_eval_step(self):
        strategy = self.strategy

        def replica_step(images, labels, mask):
            logits, per_example = self._losses(images, labels, False, 0.0)
            correct = tf.cast(
                tf.equal(tf.argmax(logits, -1, tf.int32), labels), tf.float32
            )
            if self._top5:
                top5 = tf.cast(tf.math.in_top_k(labels, logits, 5), tf.float32)
            else:
                top5 = tf.zeros_like(mask)
            return [
                tf.reduce_sum(value * mask)
                for value in (per_example, correct, top5, tf.ones_like(mask))
            ]

        if self.config.train.jit_compile:
            replica_step = tf.function(replica_step, jit_compile=True)

        @tf.function
        def eval_step(images, labels, mask):
            outputs = strategy.run(replica_step, args=(images, labels, mask))
            return [
                strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for value in outputs
            ]

        return eval_step

    def _last_good_message(self):
        path = tf.train.latest_checkpoint(
            os.path.join(self.model_dir, CHECKPOINT_DIR)
        )
        if path is None:
            return "No checkpoint was written before."
        return (
            f"The last good checkpoint, {path}, is kept (step "
            f"{_checkpoint_step(path)})."
        )

    def _check_finite_weights(self, step):
        """Refuses to evaluate or checkpoint NaN / infinite weights."""
        bad = [
            v.path for v in self.model.trainable_variables
            if not bool(tf.reduce_all(tf.math.is_finite(v)))
        ]
        if bad:
            self._flush_writers()
            raise NonFiniteLossError(
                f"Training stopped at step {step}: the weights "
                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} are NaN "
                f"or infinite. {self._last_good_message()} Lower "
                "config.train.optimizer.learning_rate or set "
                "config.train.optimizer.clipnorm, then rerun to resume."
            )

    @contextlib.contextmanager
    def _reading(self, split):
        """Turns input-reading errors into an `InputDataError` naming files."""
        try:
            yield
        except (tf.errors.DataLossError, tf.errors.NotFoundError) as error:
            dataset = self.config.dataset
            try:
                unreadable = data_provider.find_unreadable_files(
                    dataset.name, split, data_dir=dataset.data_dir,
                    translate_to=dataset.translate_to,
                    image_size=dataset.image_size,
                    value_range=self._data_kwargs["value_range"],
                )
            except Exception as scan_error:  # The scan is best effort.
                unreadable = [("(scan failed)", _one_line(scan_error))]
            files = "; ".join(f"{path}: {reason}" for path, reason in unreadable)
            raise InputDataError(
                f"Could not read the {split!r} split of dataset "
                f"{dataset.name!r} at step {self.step} ({_one_line(error)}). "
                f"Unreadable files: {files or 'none found'}. Prepare the "
                "dataset again, then rerun to resume."
            ) from None

    def _make_manager(self, name):
        return tf.train.CheckpointManager(
            self._checkpoint,
            self._write_dir(_MANAGERS[name]),
            max_to_keep=self.config.train.keep_checkpoints if name == "ckpt" else 1,
            checkpoint_name=name,
        )

    def _repair_checkpoints(self):
        """Chief, under the lock: tidies the checkpoint directories.

        Removes the files of interrupted checkpoint writes, moves unreadable
        checkpoints found by `restore` to `<dir>/corrupted/` and points the
        state file at the checkpoint actually restored, so that the managers
        and `tf.train.latest_checkpoint` agree with the restored state.
        """
        if not self.is_chief:
            return
        restored = self._restored.get("latest")
        directory = os.path.join(self.model_dir, CHECKPOINT_DIR)
        if restored is not None and _checkpoint_candidates(directory) != restored[2]:
            self.restore("latest")  # Changed since construction: redo.
            restored = self._restored["latest"]
        for subdir in _MANAGERS.values():
            removed = _remove_partial_checkpoint_files(
                os.path.join(self.model_dir, subdir)
            )
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
                p for p in _checkpoint_candidates(directory)
                if _checkpoint_step(p) <= _checkpoint_step(path)
            ][: self.config.train.keep_checkpoints]
            # Relative names, as CheckpointManager writes them.
            tf.compat.v1.train.update_checkpoint_state(
                directory, os.path.basename(path),
                all_model_checkpoint_paths=[os.path.basename(p) for p in valid[::-1]],
            )
            self._managers["ckpt"] = self._make_manager("ckpt")
        self._restored.pop("latest")

    def _write_dir(self, subdir):
        """Chief writes in model_dir; other workers in a private temp dir."""
        if self.is_chief:
            return os.path.join(self.model_dir, subdir)
        resolver = self.strategy.cluster_resolver
        return os.path.join(
            self.model_dir, ".workers",
            f"{resolver.task_type}_{resolver.task_id}", subdir,
        )

    def _save(self, name, step):
        """Saves a checkpoint of the 'ckpt' or 'best' manager.

        Raises:
            ModelDirWriteError: if the write fails (the partial files are
                removed; the previous checkpoints are intact).
        """
        # Every worker must take part in a save (it may run collectives).
        self._sync_statistics()
        manager = self._managers[name]
        try:
            path = manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            with contextlib.suppress(OSError, tf.errors.OpError):
                _remove_partial_checkpoint_files(manager.directory)
            kept = ", ".join(manager.checkpoints) or "none"
            raise ModelDirWriteError(
                f"Could not write the checkpoint of step {step} in "
                f"{manager.directory} ({_one_line(error)}). The previous "
                f"checkpoints are intact: {kept}. Free disk space or make the "
                "directory writable, then rerun to resume."
            ) from None
        if not self.is_chief:
            tf.io.gfile.rmtree(os.path.dirname(path))
        return path

    def _save_best(self, best):
        self._save("best", best["step"])
        if self.is_chief:
            _atomic_write_text(
                os.path.join(self.model_dir, BEST_DIR, BEST_FILE),
                json.dumps(best, indent=2),
            )

    def _writer(self, split):
        if split not in self._writers:
            self._writers[split] = (
                tf.summary.create_file_writer(os.path.join(self.model_dir, split))
                if self.is_chief else tf.summary.create_noop_writer()
            )
        return self._writers[split]

    def _flush_writers(self):
        for writer in self._writers.values():
            writer.flush()

    def _log_training(self, step, window):
        """Progress line and training summaries (times: training steps only)."""
        train = self.config.train
        seconds = window["seconds"]
        loss = window["loss"] / window["count"]
        accuracy = window["correct"] / window["count"]
        examples_per_second = window["steps"] * train.batch_size / max(seconds, 1e-9)
        learning_rate = float(self.optimizer.learning_rate.numpy())
        remaining = (train.train_steps - step) * seconds / window["steps"]
        logging.info(
            "step %d/%d  loss %.4f  accuracy %.4f  lr %.3g  %.0f examples/s  "
            "ETA %s", step, train.train_steps, loss, accuracy, learning_rate,
            examples_per_second, _format_duration(remaining),
        )
        with self._writer("train").as_default():
            for name, value in (
                ("loss", loss), ("accuracy", accuracy),
                ("learning_rate", learning_rate),
                ("examples_per_second", examples_per_second),
                ("gradient_norm", window["grad_norm"] / window["steps"]),
            ):
                write_scalar(name, value, step)

    def _evaluate_and_record(self, split, step):
        metrics = self.evaluate(split)
        logging.info(
            "%s at step %d: %s", split, step,
            "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in metrics.items()),
        )
        if not self.is_chief:
            return metrics
        with self._writer(split).as_default():
            for name, value in metrics.items():
                write_scalar(name, value, step)
            if split == "valid":
                for layer in lrlc_layers_with_fixed_weights(self.model):
                    write_images(
                        f"combining_weights/{layer.name}",
                        combining_weight_images(layer), step,
                    )
        self._writer(split).flush()
        path = os.path.join(self.model_dir, METRICS_FILE)
        lines = [
            line for line in _read_json_lines(path)
            if (line["step"], line["split"]) != (step, split)
        ]
        lines.append(dict(step=step, split=split, **metrics))
        _atomic_write_text(path, "".join(json.dumps(l) + "\n" for l in lines))
        return metrics

    def _truncate_metrics(self, step):
        """Drops evaluations newer than the restored step (they are redone)."""
        path = os.path.join(self.model_dir, METRICS_FILE)
        lines = _read_json_lines(path)
        kept = [line for line in lines if line["step"] <= step]
        if len(kept) != len(lines):
            _atomic_write_text(path, "".join(json.dumps(l) + "\n" for l in kept))

    def _read_best(self):
        """The best validation up to the restored step, from `metrics.jsonl`.

        `metrics.jsonl` is the record (it is written before the checkpoint of
        the same step). When `best/` lags behind it because a crash came
        between the checkpoint and the best checkpoint of the restored step,
        the best checkpoint is saved again from the restored state.
        """
        best = None
        for line in _read_json_lines(os.path.join(self.model_dir, METRICS_FILE)):
            if line["split"] != "valid" or line["step"] > self.step:
                continue
            metrics = {k: v for k, v in line.items() if k not in ("step", "split")}
            if best is None or metrics["accuracy"] > best["metrics"]["accuracy"]:
                best = dict(step=line["step"], metrics=metrics)
        path = os.path.join(self.model_dir, BEST_DIR, BEST_FILE)
        recorded = None
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                recorded = json.load(f)
        if best is not None and recorded != best:
            if best["step"] == self.step:
                logging.warning(
                    "Saving the best checkpoint of step %d again (a crash "
                    "interrupted its write).", self.step,
                )
                self._save_best(best)
            else:
                logging.warning(
                    "%s does not match metrics.jsonl (best step %d); it is "
                    "rewritten when a better validation comes.", path, best["step"],
                )
        return best

    def _saved_config(self):
        """The config.json of `model_dir` as a dict, or None."""
        path = os.path.join(self.model_dir, CONFIG_FILE)
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)

    def _check_same_experiment(self):
        """Refuses a `model_dir` whose run has another model or dataset.

        Its checkpoints could not be restored into this model (or would mix
        two experiments' records).

        Raises:
            ModelDirMismatchError: naming both experiments and the fields.
        """
        saved = self._saved_config()
        if saved is None:
            return
        changed = [
            key for key, _, _ in _config_changes(saved, self._config_dict())
            if key.startswith(_EXPERIMENT_FIELDS)
        ]
        if changed:
            shown = ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
            raise ModelDirMismatchError(
                f"{self.model_dir} holds a run of another experiment: "
                f"{saved.get('preset')!r} (its {CONFIG_FILE}), not "
                f"{self.config.get('preset')!r}; they differ in {shown}. Use "
                f"another model_dir, or delete {self.model_dir} to start afresh."
            )

    def _config_dict(self):
        return json.loads(self.config.to_json_best_effort())

    def _write_config(self):
        """Writes config.json; says what changed since the saved one.

        A changed learning-rate schedule (e.g. a longer `train.train_steps`
        for a finished run) is not continued but recomputed: the warning
        gives the rate at the restored step under both schedules.
        """
        path = os.path.join(self.model_dir, CONFIG_FILE)
        saved = self._saved_config()
        changes = [] if saved is None else _config_changes(saved, self._config_dict())
        if changes:
            logging.warning(
                "The config differs from the one saved in %s (%s); it is "
                "replaced and the checkpoint is resumed all the same.", path,
                ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes),
            )
            step = self.step
            before = float(create_learning_rate_schedule(
                ml_collections.ConfigDict(saved["train"]))(step))
            now = float(create_learning_rate_schedule(self.config.train)(step))
            if not math.isclose(before, now, rel_tol=1e-6, abs_tol=1e-12):
                logging.warning(
                    "The learning-rate schedule changed: at step %d the rate is "
                    "now %.3g instead of %.3g, and it follows the new schedule "
                    "from there (it is not continued).", step, now, before,
                )
        _atomic_write_text(
            path, self.config.to_json_best_effort(indent=2, sort_keys=True)
        )


# Config fields that make two runs different experiments (checkpoints of one
# do not fit the other).
_EXPERIMENT_FIELDS = (
    "model.", "dataset.name", "dataset.translate_to", "dataset.image_size",
    "dataset.value_range",
)


def _config_changes(saved, current, prefix=""):
    """(dotted key, saved value, current value) of every differing field."""
    changes = []
    for key in sorted(saved.keys() | current.keys()):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append((f"{prefix}{key}", old, new))
    return changes


def train_and_evaluate(config, model_dir, *, strategy=None):
    """Trains and evaluates an experiment in `model_dir` (resuming if needed).

    Args:
        config: experiment `ml_collections.ConfigDict`
            (see `configs/experiment.py`).
        model_dir: str, directory of the run.
        strategy: optional `tf.distribute.Strategy` (default: from
            `config.train.distribution_strategy`).

    Returns:
        The results dict written to `model_dir/results.json`.

    Raises:
        ValueError / TypeError: for an invalid config.
        NonFiniteLossError: if the loss becomes NaN or infinite.
    """
    return Trainer(config, model_dir, strategy=strategy).train_and_evaluate()


def _read_run_file(model_dir, filename):
    """Parses the JSON file `filename` the trainer wrote in `model_dir`."""
    path = os.path.join(model_dir, filename)
    if not tf.io.gfile.exists(path):
        raise ValueError(
            f"Invalid value for argument `model_dir`. Expected a directory "
            f"with {filename} written by the trainer. Received: {model_dir!r}"
        )
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def load_config(model_dir):
    """Reads the resolved config saved in `model_dir/config.json`."""
    return ml_collections.ConfigDict(_read_run_file(model_dir, CONFIG_FILE))


def load_metadata(model_dir):
    """Reads the dataset metadata saved in `model_dir/metadata.json` (a dict)."""
    return _read_run_file(model_dir, METADATA_FILE)

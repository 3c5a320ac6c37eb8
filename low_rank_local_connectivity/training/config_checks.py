"""Checks of an experiment config (alone and against a run's saved one), and
the model it describes."""

import contextlib
import functools
import json
import math

from absl import logging
import keras
import ml_collections
import numpy as np

from low_rank_local_connectivity import models
from low_rank_local_connectivity.training import errors
from low_rank_local_connectivity.training import optimization
from low_rank_local_connectivity.training import run_dir
from low_rank_local_connectivity.training.distribution import STRATEGIES
from low_rank_local_connectivity.training.optimization import OPTIMIZERS
from low_rank_local_connectivity.training.optimization import SCHEDULES
from low_rank_local_connectivity.validation import is_int as _is_int
from low_rank_local_connectivity.validation import is_number as _is_number

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def _expect(ok, field, value, expected):
    if not ok:
        raise ValueError(
            f"Invalid value for `config.{field}`. Expected {expected}. "
            f"Received: {value!r}"
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
        metadata: `data.DatasetMetadata`.

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
        metadata: `data.DatasetMetadata`.
        init_from: optional mapping with `model_dir` and `checkpoint` (see
            `run_dir.checkpoint_path`): the model is initialised from that
            run's checkpoint, before `model.convert` converts it.

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
            run_dir.restore_model, model_dir=init_from["model_dir"],
            checkpoint=init_from["checkpoint"],
        )
    with _dtype_policy(config.train.mixed_precision):
        return models.build_model(config.model, initialize=initialize)


def count_parameters(model):
    """Number of trainable scalars (batch-norm moving statistics excluded)."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


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


def check_same_experiment(saved, config, model_dir):
    """Refuses a `model_dir` whose run has another model or dataset.

    Its checkpoints could not be restored into this model (or would mix two
    experiments' records).

    Args:
        saved: the `config.json` of `model_dir` as a dict, or None.
        config: the experiment ConfigDict.
        model_dir: str, for the message.

    Raises:
        ModelDirMismatchError: naming both experiments and the fields.
    """
    if saved is None:
        return
    changed = [
        key for key, _, _ in _config_changes(saved, _as_dict(config))
        if key.startswith(_EXPERIMENT_FIELDS)
    ]
    if changed:
        shown = ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
        raise errors.ModelDirMismatchError(
            f"{model_dir} holds a run of another experiment: "
            f"{saved.get('preset')!r} (its {run_dir.CONFIG_FILE}), not "
            f"{config.get('preset')!r}; they differ in {shown}. Use "
            f"another model_dir, or delete {model_dir} to start afresh."
        )


def warn_about_changes(saved, config, step, path):
    """Warns about the fields that changed since the saved config.

    A changed learning-rate schedule (e.g. a longer `train.train_steps` for a
    finished run) is not continued but recomputed: a second warning gives the
    rate at the restored `step` under both schedules.
    """
    changes = [] if saved is None else _config_changes(saved, _as_dict(config))
    if not changes:
        return
    logging.warning(
        "The config differs from the one saved in %s (%s); it is "
        "replaced and the checkpoint is resumed all the same.", path,
        ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes),
    )
    before = float(optimization.create_learning_rate_schedule(
        ml_collections.ConfigDict(saved["train"]))(step))
    now = float(optimization.create_learning_rate_schedule(config.train)(step))
    if not math.isclose(before, now, rel_tol=1e-6, abs_tol=1e-12):
        logging.warning(
            "The learning-rate schedule changed: at step %d the rate is "
            "now %.3g instead of %.3g, and it follows the new schedule "
            "from there (it is not continued).", step, now, before,
        )


def _as_dict(config):
    return json.loads(config.to_json_best_effort())

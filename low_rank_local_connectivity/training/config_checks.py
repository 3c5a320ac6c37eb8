"""Checks of an experiment config, and the model it describes."""

import contextlib

import keras
import ml_collections
import numpy as np

from low_rank_local_connectivity import models
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


def build_model(config, metadata):
    """Builds the Keras model of an experiment config.

    Args:
        config: experiment ConfigDict; `num_classes` / `input_shape` of its
            model section are filled from `metadata` when None.
        metadata: `data_provider.DatasetMetadata`.

    Returns:
        A `keras.Model` built with the dtype policy `train.mixed_precision`.
    """
    resolve_model_config(config, metadata)
    with _dtype_policy(config.train.mixed_precision):
        return models.build_model(config.model)


def count_parameters(model):
    """Number of trainable scalars (batch-norm moving statistics excluded)."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))

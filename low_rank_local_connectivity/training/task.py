"""The task of a run: what it builds, independently of the Keras backend.

A task builds the model, the optimiser, the input pipelines and the compiled
steps of an experiment config, and does nothing else: the `Controller` decides
when to train, evaluate and checkpoint. The backend-specific part of training
is a task's steps and its checkpoint I/O; `runner.create_task` picks the task of
the Keras backend in use.

The interface the controller and the callbacks use (`tf_task.TensorFlowTask`):

| member | what |
| --- | --- |
| `config`, `metadata`, `model`, `optimizer` | what the task built |
| `is_chief` | whether this worker writes the run's shared files |
| `num_replicas` | replicas a global batch is split over |
| `step`, `train_seconds` | steps done and training time (checkpointed) |
| `loss_scaling` | dynamic loss scaling (non-finite gradients are then expected) |
| `train_step()` | one step on the next batch -> dict of global sums |
| `evaluate(split)` | one full pass over 'valid' or 'test' -> metrics |
| `add_train_seconds(seconds)` | adds to the checkpointed training time |
| `learning_rate()` | the current rate (float) |
| `non_finite_variables()` | names of NaN / infinite trainable variables |
| `checkpoints(model_dir, manager_factory=None)` | the run's checkpoint manager |
| `measure_step_throughput(...)` | examples/s of the compiled step alone |
"""

import contextlib
import functools

import keras
import numpy as np

from low_rank_local_connectivity import models
from low_rank_local_connectivity.validation import is_int

# Top-5 accuracy is reported when there are more classes than this.
TOP5_MIN_CLASSES = 11


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
        metadata: `DatasetMetadata`.

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
        if value != expected:
            raise ValueError(
                f"Invalid value for `config.model.{field}`. Expected the {field} "
                f"of dataset {metadata.name!r}, {expected} (or None to take it "
                f"from the dataset). Received: {value!r}"
            )


def build_model(config, metadata, init_from=None):
    """Builds the Keras model of an experiment config.

    Args:
        config: experiment ConfigDict; `num_classes` / `input_shape` of its
            model section are filled from `metadata` when None.
        metadata: `DatasetMetadata`.
        init_from: optional mapping with `model_dir` and `checkpoint` (see
            `checkpointing.checkpoint_path`): the model is initialised from that
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
        from low_rank_local_connectivity.training import runs

        initialize = functools.partial(
            runs.restore_model_weights, model_dir=init_from["model_dir"],
            checkpoint=init_from["checkpoint"],
        )
    with _dtype_policy(config.train.mixed_precision):
        return models.build_model(config.model, initialize=initialize)


def build_model_and_optimizer(config, metadata, init_from=None):
    """The model (`build_model`) and its built optimiser.

    Decoupled weight decay skips the variables of rank < 2 (biases, batch-norm
    parameters). Call it in the distribution's scope.
    """
    from low_rank_local_connectivity.training import optimization

    model = build_model(config, metadata, init_from)
    optimizer = optimization.create_optimizer(config.train)
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) < 2]
    )
    optimizer.build(model.trainable_variables)
    return model, optimizer


def check_batch_sizes(train_config, num_replicas):
    """Raises a `ValueError` unless both batch sizes split over the replicas."""
    for field in ("batch_size", "eval_batch_size"):
        if train_config[field] % num_replicas:
            raise ValueError(
                f"Invalid value for `config.train.{field}`. Expected a "
                f"multiple of the number of replicas ({num_replicas}). "
                f"Received: {train_config[field]}"
            )


def check_throughput_arguments(num_steps, warmup_steps):
    """The argument checks of `measure_step_throughput`."""
    for name, value, low in (("num_steps", num_steps, 1),
                             ("warmup_steps", warmup_steps, 0)):
        if not (is_int(value) and value >= low):
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected an integer "
                f">= {low}. Received: {name}={value!r}"
            )


def count_parameters(model):
    """Number of trainable scalars (batch-norm moving statistics excluded)."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))

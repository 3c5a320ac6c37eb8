"""Config checks, the learning-rate schedule, the optimiser and the strategy names."""

import math
import os

import numpy as np
import pytest

from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.training import distribution


def _config(preset="mnist_small_lrlc", **overrides):
    """Experiment config with flattened overrides ('train.batch_size': 32)."""
    config = experiment.get_config(preset)
    config.update_from_flattened_dict(overrides)
    return config


# ----------------------------------------------------------------------------
# Configuration, schedule and optimiser.


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("train.optimizer.name", "lbfgs", r"config\.train\.optimizer\.name.*'lbfgs'"),
        ("train.schedule.name", "linear", r"config\.train\.schedule\.name"),
        ("train.batch_size", 0, r"config\.train\.batch_size.*positive integer"),
        ("train.train_steps", -5, r"config\.train\.train_steps.*-5"),
        ("train.label_smoothing", 1.0, r"config\.train\.label_smoothing.*\[0, 1\)"),
        ("train.optimizer.learning_rate", -1.0, r"learning_rate.*positive"),
        ("train.optimizer.clipnorm", -1.0, r"clipnorm.*non-negative"),
        ("train.schedule.warmup_steps", 10**9, r"warmup_steps"),
        ("train.schedule.boundaries", (20, 10), r"boundaries.*increasing"),
        ("train.distribution_strategy", "horovod", r"distribution_strategy"),
        ("train.mixed_precision", "float16", r"mixed_precision"),
        ("dataset.shuffle_buffer_size", 0, r"shuffle_buffer_size"),
    ],
)
def test_validate_config_names_field_and_value(field, value, message):
    config = _config()
    with config.unlocked():
        config.update_from_flattened_dict({field: value})
    with pytest.raises(ValueError, match=message):
        training.validate_config(config)


def test_validate_config_type_and_batch_divisibility(tmp_path):
    with pytest.raises(TypeError, match="ConfigDict"):
        training.validate_config({"train": {}})
    config = _config(**{"train.batch_size": 33})
    strategy = _FakeReplicas(2)
    message = r"batch_size.*multiple of the number of replicas \(2\).*33"
    with pytest.raises(ValueError, match=message):
        training.train_and_evaluate(config, str(tmp_path), strategy=strategy)
    assert not os.listdir(tmp_path)


class _FakeReplicas:
    """Stands in for a strategy only as far as the batch-size check."""

    cluster_resolver = None

    def __init__(self, replicas):
        self.num_replicas_in_sync = replicas


def _schedule_oracle(t, peak, total, decay, warmup, boundaries, rate, end):
    if t < warmup:
        return peak * (t + 1) / warmup
    if decay == "constant":
        return peak
    if decay == "step":
        return peak * rate ** sum(t >= b for b in boundaries)
    progress = min(max((t - warmup) / (total - warmup), 0.0), 1.0)
    return peak * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("decay", training.SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 10])
def test_learning_rate_schedule_matches_formula(decay, warmup):
    args = dict(peak=0.4, total=100, decay=decay, warmup=warmup,
                boundaries=(30, 60), rate=0.1, end=0.05)
    schedule = training.WarmupDecaySchedule(
        args["peak"], args["total"], decay=decay, warmup_steps=warmup,
        boundaries=args["boundaries"], decay_rate=args["rate"],
        end_learning_rate_fraction=args["end"],
    )
    steps = [0, 1, 5, 9, 10, 11, 29, 30, 31, 59, 60, 77, 99, 100, 120]
    got = [float(schedule(t)) for t in steps]
    expected = [_schedule_oracle(t, **args) for t in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    restored = training.WarmupDecaySchedule(**schedule.get_config())
    assert float(restored(42)) == float(schedule(42))


@pytest.mark.parametrize(
    "name, precision, expected",
    [
        ("sgd", "float32", "SGD"),
        ("adam", "float32", "Adam"),
        ("adamw", "float32", "AdamW"),
        ("rmsprop", "float32", "RMSprop"),
        ("adam", "mixed_float16", "LossScaleOptimizer"),
    ],
)
def test_create_optimizer(name, precision, expected):
    config = _config(**{"train.optimizer.name": name,
                        "train.optimizer.weight_decay": 1e-4,
                        "train.mixed_precision": precision})
    optimizer = training.create_optimizer(config.train)
    assert type(optimizer).__name__ == expected
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    assert inner.weight_decay == pytest.approx(1e-4)
    assert isinstance(inner._learning_rate, training.WarmupDecaySchedule)


def test_create_strategy_rejects_unknown_name():
    with pytest.raises(ValueError, match="Expected one of .*'default'.*Received: 'ps'"):
        distribution.create_strategy("ps")

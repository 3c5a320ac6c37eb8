"""The learning-rate schedule and the optimiser of an experiment config."""

import math

import keras

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")

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

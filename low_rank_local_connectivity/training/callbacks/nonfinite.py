"""The NaN stop: a run ends, with its last good checkpoint kept, when the loss
or the weights stop being finite."""

import math

from low_rank_local_connectivity.training import errors
from low_rank_local_connectivity.training.callbacks import base

_ADVICE = (
    "Lower config.train.optimizer.learning_rate or set "
    "config.train.optimizer.clipnorm, then rerun to resume."
)


class TerminateOnNonFinite(base.Callback):
    """Raises `NonFiniteLossError` on a NaN / infinite loss or weights.

    The loss and the gradient norm are checked after every step (with dynamic
    loss scaling a non-finite gradient is expected: the optimiser skips that
    step and lowers the scale); the weights before every evaluation and
    checkpoint, so that NaN weights are never evaluated or saved.
    """

    def __init__(self):
        self._weights_checked_at = None

    def on_train_batch_end(self, controller, step, logs):
        loss = logs["loss"] / logs["count"] + logs["reg_loss"]
        grad_norm = logs["grad_norm"]
        if not math.isfinite(loss) or not (
            math.isfinite(grad_norm) or controller.task.loss_scaling
        ):
            raise errors.NonFiniteLossError(
                f"Training stopped at step {step}: the loss is {loss} "
                f"(gradient norm {grad_norm}). "
                f"{controller.checkpoints.last_good_message()} {_ADVICE}"
            )

    def on_evaluate_begin(self, controller, split):
        self._check_weights(controller)

    def on_checkpoint_begin(self, controller, checkpoint, step):
        self._check_weights(controller)

    def _check_weights(self, controller):
        step = controller.step
        if self._weights_checked_at == step:
            return
        bad = controller.task.non_finite_variables()
        if bad:
            raise errors.NonFiniteLossError(
                f"Training stopped at step {step}: the weights "
                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} are NaN "
                f"or infinite. {controller.checkpoints.last_good_message()} {_ADVICE}"
            )
        self._weights_checked_at = step

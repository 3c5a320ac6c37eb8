"""The progress lines of a run: start, step, loss, examples/s, ETA, evaluations."""

import sys

from low_rank_local_connectivity.training import task as task_lib
from low_rank_local_connectivity.training.callbacks import base


def format_duration(seconds):
    """'H:MM:SS'."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class MetricWindow:
    """Training metrics accumulated over the steps between two reports."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.loss = self.correct = self.count = self.seconds = self.grad_norm = 0.0
        self.steps = 0

    def add(self, logs):
        """Adds one step's batch logs (global sums, seconds, gradient norm)."""
        self.loss += logs["loss"] + logs["reg_loss"] * logs["count"]
        self.correct += logs["correct"]
        self.count += logs["count"]
        self.steps += 1
        self.seconds += logs["seconds"]
        self.grad_norm += logs["grad_norm"]

    def summary(self, batch_size):
        """Mean loss and accuracy, examples/s and mean gradient norm."""
        return dict(
            loss=self.loss / self.count,
            accuracy=self.correct / self.count,
            examples_per_second=self.steps * batch_size / max(self.seconds, 1e-9),
            gradient_norm=self.grad_norm / self.steps,
        )


def is_report_step(config, step):
    """Whether `step` ends a `train.log_every_steps` window (or the run)."""
    train = config.train
    return step % train.log_every_steps == 0 or step == train.train_steps


class ProgressLogger(base.Callback):
    """Prints the progress of a run, one line per event.

    Lines: the start (steps, parameters, model_dir), every
    `train.log_every_steps` steps (step, loss, accuracy, learning rate,
    examples/s of the training steps, ETA), every evaluation and the end.

    Args:
        stream: where to print (default: `sys.stdout` at the time of printing).
    """

    def __init__(self, stream=None):
        self._stream = stream
        self._window = MetricWindow()

    def _print(self, line):
        print(line, file=self._stream or sys.stdout, flush=True)

    def on_train_begin(self, controller):
        config = controller.config
        if controller.step < config.train.train_steps:
            self._print(
                f"Training {config.get('preset', config.dataset.name)} from step "
                f"{controller.step} to {config.train.train_steps} "
                f"({task_lib.count_parameters(controller.task.model)} parameters) "
                f"in {controller.model_dir}."
            )

    def on_train_batch_end(self, controller, step, logs):
        self._window.add(logs)
        if not is_report_step(controller.config, step):
            return
        train = controller.config.train
        window = self._window.summary(train.batch_size)
        remaining = (train.train_steps - step) * self._window.seconds / self._window.steps
        self._print(
            f"step {step}/{train.train_steps}  loss {window['loss']:.4f}  "
            f"accuracy {window['accuracy']:.4f}  lr {controller.task.learning_rate():.3g}  "
            f"{window['examples_per_second']:.0f} examples/s  "
            f"ETA {format_duration(remaining)}"
        )
        self._window.reset()

    def on_evaluate_end(self, controller, split, metrics):
        values = "  ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in metrics.items()
        )
        self._print(f"{split} at step {controller.step}: {values}")

    def on_train_end(self, controller, results):
        best = results["best_valid"]
        self._print(
            f"Done: best valid accuracy {best['metrics']['accuracy']:.4f} at step "
            f"{best['step']}; test accuracy {results['test']['accuracy']:.4f} of the "
            f"final model (step {results['train_steps']}; "
            f"`training.evaluate_checkpoint(model_dir)` tests the best one)."
        )

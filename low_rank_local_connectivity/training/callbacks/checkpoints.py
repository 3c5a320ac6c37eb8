"""The checkpoints of a run as callbacks: 'latest' and 'best'."""

from absl import logging

from low_rank_local_connectivity.training import run_dir
from low_rank_local_connectivity.training.callbacks import base


class PeriodicCheckpoint(base.Callback):
    """Saves the 'latest' checkpoint every `train.checkpoint_every_steps` steps
    and after every validation (the last step is always validated)."""

    def on_step_end(self, controller, step, logs):
        if "valid" in logs or step % controller.config.train.checkpoint_every_steps == 0:
            controller.save_checkpoint("latest", step)


class BestCheckpoint(base.Callback):
    """Keeps `best/`: the checkpoint of the best validation and `best.json`.

    Put it after `PeriodicCheckpoint`: a crash between the two writes leaves
    `best/` behind `metrics.jsonl`, and the resumed run saves it again from the
    restored state (`on_train_begin`).
    """

    def on_train_begin(self, controller):
        best = controller.best
        if best is None or controller.run_dir.read_best() == best:
            return
        if best["step"] == controller.step:
            logging.warning(
                "Saving the best checkpoint of step %d again (a crash "
                "interrupted its write).", controller.step,
            )
            self._save(controller, best)
        else:
            logging.warning(
                "%s does not match metrics.jsonl (best step %d); it is "
                "rewritten when a better validation comes.",
                controller.run_dir.path(run_dir.BEST_DIR, run_dir.BEST_FILE),
                best["step"],
            )

    def on_step_end(self, controller, step, logs):
        if "valid" in logs and controller.best["step"] == step:
            self._save(controller, controller.best)

    def _save(self, controller, best):
        controller.save_checkpoint("best", best["step"])
        if controller.task.is_chief:
            controller.run_dir.write_best(best)

"""`metrics.jsonl`: the record of every evaluation of a run."""

from low_rank_local_connectivity.training.callbacks import base


class MetricsRecorder(base.Callback):
    """Writes one line per recorded evaluation to `metrics.jsonl` (chief only).

    The record is written before the checkpoint of the same step, and a resumed
    run first drops the lines newer than its restored step (it redoes those
    evaluations): after any crash the record matches the restored state.
    """

    def on_train_begin(self, controller):
        if controller.task.is_chief:
            controller.run_dir.truncate_evaluations(controller.step)

    def on_evaluate_end(self, controller, split, metrics):
        if controller.task.is_chief:
            controller.run_dir.record_evaluation(controller.step, split, metrics)

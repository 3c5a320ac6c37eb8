"""TensorBoard summaries of a run, as a callback."""

from low_rank_local_connectivity import visualization
from low_rank_local_connectivity.training.callbacks import base
from low_rank_local_connectivity.training.callbacks import progress


class TensorBoardSummaries(base.Callback):
    """Writes the run's TensorBoard summaries under `model_dir` (chief only).

    - `train/`: every `train.log_every_steps` steps, the window's mean loss,
      accuracy, mean gradient norm, examples/s and the learning rate;
    - `valid/`, `test/`: every recorded evaluation's metrics;
    - `valid/`: at every validation, the combining weights of each LRLC layer
      with fixed weights, as heat maps with a colour scale.

    The event files are written with TensorFlow's summary ops; where
    TensorFlow is not installed (a JAX run) it says so once and writes none.
    """

    def __init__(self):
        self._window = progress.MetricWindow()
        self._writers = None

    def on_train_begin(self, controller):
        if not controller.task.is_chief:
            return
        try:
            from low_rank_local_connectivity.training import summaries
        except ImportError:  # The event files are written with TensorFlow.
            print("TensorBoard summaries are off: writing them needs TensorFlow "
                  "(pip install tensorflow); metrics.jsonl has every evaluation.",
                  flush=True)
            return
        self._writers = summaries.SummaryWriters(controller.model_dir)

    def on_train_batch_end(self, controller, step, logs):
        self._window.add(logs)
        if self._writers is None or not progress.is_report_step(controller.config, step):
            return
        values = self._window.summary(controller.config.train.batch_size)
        values["learning_rate"] = controller.task.learning_rate()
        self._writers.scalars("train", values, step)
        self._writers.flush("train")
        self._window.reset()

    def on_evaluate_end(self, controller, split, metrics):
        if self._writers is None:
            return
        from low_rank_local_connectivity.training import summaries

        step = controller.step
        self._writers.scalars(split, metrics, step)
        if split == "valid":
            for layer in visualization.lrlc_layers(controller.task.model):
                if layer.input_dependent:
                    continue
                png = summaries.combining_weight_png(
                    layer, f"{layer.name}: combining weights at step {step}"
                )
                self._writers.png(split, f"combining_weights/{layer.name}", png, step)
        self._writers.flush(split)

    def on_train_end(self, controller, results):
        if self._writers is not None:
            self._writers.flush()

"""The controller: the outer loop of a run.

The controller decides when to train, evaluate and stop, and tells its
callbacks (`callbacks/`) at every point; it is given the task (what to run),
the checkpoint manager (how the state is saved) and the callbacks (what else
happens: checkpoints, records, summaries, progress, the NaN stop). It writes
only `config.json`, `metadata.json` and `results.json` itself.

One step, as the callbacks see it:

1. `on_train_batch_begin(controller, step)`, the training step,
   `on_train_batch_end(controller, step, logs)` (`logs`: the step's global sums
   and `seconds`; `step` counts the steps done, this one included);
2. every `train.eval_every_steps` steps and at the last step, the validation:
   `on_evaluate_begin(controller, 'valid')`, `on_evaluate_end(controller,
   'valid', metrics)`;
3. `on_step_end(controller, step, logs)`, `logs` = {'train': ..., 'valid':
   metrics when validated at this step}: the checkpoints are written here,
   after the evaluation they may depend on.

Checkpoints are written through `controller.save_checkpoint`, which brackets
them with `on_checkpoint_begin` / `on_checkpoint_end`. After the loop the test
split is evaluated once (`on_evaluate_*` with 'test') and `on_train_end(controller,
results)` gets the dict written to `results.json`.
"""

import os
import time

from low_rank_local_connectivity.training import callbacks as callbacks_lib
from low_rank_local_connectivity.training import config_checks
from low_rank_local_connectivity.training import run_dir
from low_rank_local_connectivity.training import task as task_lib


class Controller:
    """Runs a task in a `model_dir`: resume, train, evaluate, record.

    Args:
        task: the run's task (`task.py`).
        model_dir: str, the run directory.
        checkpoints: the checkpoint manager (`task.checkpoints(model_dir)`):
            `restore(checkpoint)`, `repair()`, `save(checkpoint, step)`,
            `last_good_message()`.
        callbacks: sequence of `callbacks.Callback`, called in order.

    Attributes:
        task, model_dir, checkpoints, callbacks: as given.
        config: the task's resolved config.
        run_dir: the `run_dir.RunDirectory` of `model_dir`.
        evaluations: the evaluations recorded so far (lines of
            `metrics.jsonl` up to the restored step, then this session's).
        best: the best validation so far, `dict(step=..., metrics=...)`, or None.
    """

    def __init__(self, task, model_dir, checkpoints, callbacks=()):
        self.task = task
        self.config = task.config
        self.model_dir = os.fspath(model_dir)
        self.run_dir = run_dir.RunDirectory(self.model_dir)
        self.checkpoints = checkpoints
        self.callbacks = callbacks_lib.CallbackList(callbacks)
        self.evaluations = []
        self.best = None

    @property
    def step(self):
        return self.task.step

    def evaluation_due(self, step):
        train = self.config.train
        return step % train.eval_every_steps == 0 or step == train.train_steps

    def evaluate(self, split, *, record=True):
        """Evaluates a split at the current step.

        Args:
            split: 'valid' or 'test'.
            record: when True, the callbacks are told (`on_evaluate_begin` /
                `on_evaluate_end`: records, summaries, the progress line) and
                the evaluation joins `evaluations` (and `best`); False is a
                look that leaves no trace.

        Returns:
            The metrics dict of `task.evaluate`.
        """
        if not record:
            return self.task.evaluate(split)
        self.callbacks.on_evaluate_begin(self, split)
        metrics = self.task.evaluate(split)
        step = self.step
        self.evaluations.append(dict(step=step, split=split, **metrics))
        if split == "valid" and (
            self.best is None or metrics["accuracy"] > self.best["metrics"]["accuracy"]
        ):
            self.best = dict(step=step, metrics=metrics)
        self.callbacks.on_evaluate_end(self, split, metrics)
        return metrics

    def save_checkpoint(self, checkpoint, step):
        """Saves the 'latest' or 'best' checkpoint, telling the callbacks."""
        self.callbacks.on_checkpoint_begin(self, checkpoint, step)
        path = self.checkpoints.save(checkpoint, step)
        self.callbacks.on_checkpoint_end(self, checkpoint, step, path)
        return path

    def restore(self, checkpoint="latest"):
        """Restores the newest readable 'latest' or 'best' checkpoint.

        Returns:
            The checkpoint path, or None when there is none.
        """
        return self.checkpoints.restore(checkpoint)

    def run(self):
        """Resumes the run and trains it to `train.train_steps`.

        The caller holds the `model_dir` lock (`runner.train_and_evaluate`):
        the newest readable checkpoint is restored and the directory repaired
        first. Validation runs every `train.eval_every_steps` and at the last
        step; the test split is evaluated once at the end.

        Returns:
            The results dict also written to `results.json`.

        Raises:
            ModelDirMismatchError: if `model_dir` holds another experiment.
            TrainerError: from the task, the checkpoints or the callbacks
                (e.g. `NonFiniteLossError`, `ModelDirWriteError`).
        """
        config, train = self.config, self.config.train
        saved = self.run_dir.saved_config()
        config_checks.check_same_experiment(saved, config, self.model_dir)
        self.checkpoints.restore("latest")
        self.checkpoints.repair()
        start_step, start_wall = self.step, time.time()
        if self.task.is_chief:
            self.run_dir.makedirs()
            config_checks.warn_about_changes(
                saved, config, start_step, self.run_dir.path(run_dir.CONFIG_FILE)
            )
            self.run_dir.write_config(config)
            self.run_dir.write_metadata(self.task.metadata)
        self.evaluations = [
            line for line in self.run_dir.evaluations() if line["step"] <= start_step
        ]
        self.best = run_dir.best_of(self.evaluations)
        self.callbacks.on_train_begin(self)
        # Throughput without the session's first step, which traces the step.
        steady_steps, steady_seconds = 0, 0.0
        while self.step < train.train_steps:
            self.callbacks.on_train_batch_begin(self, self.step)
            started = time.time()
            logs = self.task.train_step()
            logs["seconds"] = time.time() - started
            step = self.step
            self.task.add_train_seconds(logs["seconds"])
            if step > start_step + 1:
                steady_steps += 1
                steady_seconds += logs["seconds"]
            self.callbacks.on_train_batch_end(self, step, logs)
            step_logs = dict(train=logs)
            if self.evaluation_due(step):
                step_logs["valid"] = self.evaluate("valid")
            self.callbacks.on_step_end(self, step, step_logs)
        if self.best is None:
            # Nothing was trained in this session and nothing was recorded.
            self.evaluate("valid")
        test = self.evaluate("test")
        steps_done, train_seconds = self.step, self.task.train_seconds
        results = dict(
            preset=config.get("preset"),
            dataset=config.dataset.name,
            model=config.model.get("name"),
            train_steps=steps_done,
            batch_size=train.batch_size,
            num_replicas=self.task.num_replicas,
            num_parameters=task_lib.count_parameters(self.task.model),
            best_valid=self.best,
            test=test,
            train_seconds=train_seconds,
            examples_per_second=(
                steps_done * train.batch_size / train_seconds if train_seconds else None
            ),
            steady_examples_per_second=(
                steady_steps * train.batch_size / steady_seconds
                if steady_seconds else None
            ),
            session_steps=steps_done - start_step,
            session_wall_seconds=time.time() - start_wall,
        )
        if self.task.is_chief:
            self.run_dir.write_results(results)
        self.callbacks.on_train_end(self, results)
        return results

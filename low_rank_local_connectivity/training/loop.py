"""The outer training loop: `Trainer` and `train_and_evaluate`.

The loop decides when to train, log, evaluate, checkpoint and stop, and calls
the hooks of `hooks.py` at each of those points. It owns no file format and
no TensorFlow detail: the compiled steps are in `steps.py`, the strategy in
`distribution.py`, checkpoint I/O in `checkpointing.py`, the run files in
`run_dir.py` and the summaries in `summaries.py` (README, "Repository layout").

Keras' `model.fit` does not run under `MultiWorkerMirroredStrategy` with
Keras 3, and `tf.estimator` no longer exists, so the loop is written with
`strategy.run` over `distribute_datasets_from_function`, a Keras 3 model and
optimiser, and `tf.train.Checkpoint` (which tracks Keras 3 models and
optimisers, slots included).
"""

import math
import os
import time

from absl import logging
import keras
import ml_collections
import tensorflow as tf

from low_rank_local_connectivity.training import checkpointing
from low_rank_local_connectivity.training import config_checks
from low_rank_local_connectivity.training import distribution
from low_rank_local_connectivity.training import errors
from low_rank_local_connectivity.training import hooks as hooks_lib
from low_rank_local_connectivity.training import inputs
from low_rank_local_connectivity.training import lock as lock_lib
from low_rank_local_connectivity.training import optimization
from low_rank_local_connectivity.training import run_dir
from low_rank_local_connectivity.training import steps
from low_rank_local_connectivity.training import summaries
from low_rank_local_connectivity.validation import is_int

EVAL_SPLITS = ("valid", "test")

# Top-5 accuracy is reported when there are more classes than this.
_TOP5_MIN_CLASSES = 11


class Trainer:
    """Builds an experiment and trains / evaluates it in a `model_dir`.

    Construction validates the config, creates (or takes) the strategy,
    seeds Python, NumPy and TensorFlow (`keras.utils.set_random_seed(seed)`),
    builds the model and optimiser under the strategy and restores the latest
    checkpoint of `model_dir` if there is one; a new run with
    `config.init_from` starts from the model weights of that run instead
    (`config_checks.build_model`). A `model_dir` of another experiment is
    refused (`ModelDirMismatchError`). The training input pipeline is built
    when training starts, positioned at the restored step.

    Args:
        config: experiment `ml_collections.ConfigDict`
            (see `configs/experiment.py`). It is copied, never modified.
        model_dir: str, directory of the run (created if needed).
        strategy: optional `tf.distribute.Strategy`; by default one is
            created from `config.train.distribution_strategy`.
        hooks: sequence of hooks (`hooks.Hook`), called in order.
        checkpoint_manager_factory: optional replacement of
            `tf.train.CheckpointManager` (see `checkpointing.Checkpoints`).

    Attributes:
        config: the resolved config (model `num_classes` / `input_shape`
            filled in).
        metadata: `data.DatasetMetadata`.
        strategy, model, optimizer: the objects in use.
        is_chief: bool, whether this worker writes the shared files.
        step: int, the number of training steps done.

    Raises:
        ValueError / TypeError: for an invalid config (see `validate_config`)
            or batch sizes not divisible by the number of replicas.
    """

    def __init__(self, config, model_dir, *, strategy=None, hooks=(),
                 checkpoint_manager_factory=None):
        config_checks.validate_config(config)
        if not isinstance(model_dir, (str, os.PathLike)) or not str(model_dir):
            raise ValueError(
                "Invalid value for argument `model_dir`. Expected a directory "
                f"path. Received: {model_dir!r}"
            )
        self.config = ml_collections.ConfigDict(config.to_dict())
        self.model_dir = os.fspath(model_dir)
        self.hooks = hooks_lib.HookList(hooks)
        train = self.config.train
        if train.deterministic:
            distribution.enable_determinism()
        self.strategy = strategy or distribution.create_strategy(
            train.distribution_strategy, train.tpu_address
        )
        replicas = self.strategy.num_replicas_in_sync
        for field in ("batch_size", "eval_batch_size"):
            if train[field] % replicas:
                raise ValueError(
                    f"Invalid value for `config.train.{field}`. Expected a "
                    f"multiple of the number of replicas ({replicas}). "
                    f"Received: {train[field]}"
                )
        self._inputs = inputs.Inputs(
            self.config, self.strategy, self.hooks.transform_dataset
        )
        self.metadata = self._inputs.options.metadata
        self._inputs.check_files()
        self.is_chief = distribution.is_chief(self.strategy)
        self._run_dir = run_dir.RunDirectory(self.model_dir)
        self._summaries = summaries.Summaries(self.model_dir, self.is_chief)
        self._loss_scaling = train.mixed_precision == "mixed_float16"

        keras.utils.set_random_seed(self.config.seed)
        # `init_from` only starts a run: a resumed run restores its own checkpoint.
        init_from = self.config.get("init_from")
        if checkpointing.checkpoint_candidates(
            self._run_dir.path(run_dir.CHECKPOINT_DIR)
        ):
            init_from = None
        with self.strategy.scope():
            self.model = config_checks.build_model(
                self.config, self.metadata, init_from
            )
            self.optimizer = optimization.create_optimizer(train)
            self.optimizer.exclude_from_weight_decay(
                var_list=[v for v in self.model.trainable_variables
                          if len(v.shape) < 2]
            )
            self.optimizer.build(self.model.trainable_variables)
            self._global_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            self._train_seconds = tf.Variable(
                0.0, dtype=tf.float64, trainable=False, name="train_seconds",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self._eval_datasets = {}
        self._sync_statistics = distribution.make_sync_statistics(
            self.strategy, self.model
        )
        self._checkpoints = checkpointing.Checkpoints(
            tf.train.Checkpoint(
                model=self.model,
                optimizer=self.optimizer,
                global_step=self._global_step,
                train_seconds=self._train_seconds,
            ),
            self.model_dir, self.strategy, train.keep_checkpoints,
            self._global_step, before_save=self._sync_statistics,
            manager_factory=checkpoint_manager_factory,
        )
        num_classes = self.metadata.num_classes
        self._train_step = steps.make_train_step(
            self.strategy, self.model, self.optimizer, self._global_step, train,
            num_classes,
        )
        self._eval_step = steps.make_eval_step(
            self.strategy, self.model, num_classes,
            num_classes >= _TOP5_MIN_CLASSES, train.jit_compile,
        )
        config_checks.check_same_experiment(
            self._run_dir.saved_config(), self.config, self.model_dir
        )
        self.restore("latest")

    @property
    def step(self):
        return int(self._global_step.numpy())

    def restore(self, which="latest"):
        """Restores the 'latest' or 'best' checkpoint of `model_dir`.

        See `checkpointing.Checkpoints.restore` (returns the path restored or
        None; raises `CheckpointCorruptedError` when none is readable).
        """
        return self._checkpoints.restore(which)

    def evaluate(self, split):
        """Evaluates the current model on a split (one full, masked pass).

        Args:
            split: 'valid' or 'test'.

        Returns:
            dict with 'loss' (mean cross-entropy, no label smoothing),
            'accuracy', 'top5_accuracy' (more than 10 classes only) and
            'num_examples' (the number of real examples counted).

        Raises:
            ValueError: if `split` is not 'valid' or 'test'.
        """
        if split not in EVAL_SPLITS:
            raise ValueError(
                f"Invalid value for argument `split`. Expected one of "
                f"{EVAL_SPLITS}. Received: {split!r}"
            )
        self.hooks.before_evaluation(self, split)
        if split not in self._eval_datasets:
            self._eval_datasets[split] = self._inputs.distributed(split)
        self._sync_statistics()
        totals = None
        with self._inputs.reading(split, self.step):
            for images, labels, mask in self._eval_datasets[split]:
                sums = [float(s) for s in self._eval_step(images, labels, mask)]
                totals = (
                    sums if totals is None else [a + b for a, b in zip(totals, sums)]
                )
        loss_sum, correct, top5, count = totals
        metrics = dict(
            loss=loss_sum / count, accuracy=correct / count, num_examples=int(count)
        )
        if self.metadata.num_classes >= _TOP5_MIN_CLASSES:
            metrics["top5_accuracy"] = top5 / count
        self.hooks.after_evaluation(self, split, metrics)
        return metrics

    def measure_step_throughput(self, num_steps=20, warmup_steps=2):
        """Examples/s of the compiled training step alone, without input pipeline.

        Runs the trainer's own training step on the first training batch, cached
        in memory and repeated, and converts its outputs to Python floats as the
        training loop does. Compared with the `steady_examples_per_second` of
        `results.json` (the same step fed by the real pipeline) it shows the
        input-pipeline overhead. It trains the model and writes nothing: use it
        on a scratch `model_dir`.

        Args:
            num_steps: timed steps.
            warmup_steps: untimed steps first (the first one traces).

        Returns:
            Examples per second over the timed steps.
        """
        for name, value, low in (("num_steps", num_steps, 1),
                                 ("warmup_steps", warmup_steps, 0)):
            if not (is_int(value) and value >= low):
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected an integer "
                    f">= {low}. Received: {value!r}"
                )
        iterator = iter(self._inputs.distributed("train", one_batch_in_memory=True))
        for _ in range(warmup_steps):
            [float(v) for v in self._train_step(iterator)]
        start = time.perf_counter()
        for _ in range(num_steps):
            [float(v) for v in self._train_step(iterator)]
        seconds = time.perf_counter() - start
        return num_steps * self.config.train.batch_size / seconds

    def train_and_evaluate(self):
        """Trains to `train.train_steps`, validating and checkpointing.

        Validation runs every `train.eval_every_steps` and at the last step;
        the test split is evaluated once at the end. Resumes automatically
        (this object restored the latest checkpoint when it was created).

        Returns:
            The results dict also written to `results.json`.

        The chief holds the `model_dir` lock (`ModelDirLock`) while it runs.

        Raises:
            NonFiniteLossError: if the loss or the weights become NaN or
                infinite; the last good checkpoint stays the latest one.
            ModelDirLockedError: if another live trainer uses `model_dir`.
            ModelDirWriteError: if a checkpoint or run file cannot be
                written; the previous checkpoints are intact.
            InputDataError: if the input data cannot be read.
        """
        lock = lock_lib.ModelDirLock(self.model_dir) if self.is_chief else None
        if lock is not None:
            lock.acquire()
        try:
            self._checkpoints.repair()
            return self._train_and_evaluate()
        finally:
            if lock is not None:
                lock.release()

    def _train_and_evaluate(self):
        train = self.config.train
        start_wall = time.time()
        if self.is_chief:
            tf.io.gfile.makedirs(self.model_dir)
            config_checks.warn_about_changes(
                self._run_dir.saved_config(), self.config, self.step,
                self._run_dir.path(run_dir.CONFIG_FILE),
            )
            self._run_dir.write_config(self.config)
            self._run_dir.write_metadata(self.metadata)
            self._run_dir.truncate_evaluations(self.step)
        best = self._reconcile_best()
        window = summaries.TrainingWindow()
        session_start_step = self.step
        # Throughput without the session's first step, which traces the step.
        steady = dict(steps=0, seconds=0.0)
        self.hooks.on_train_begin(self)
        if self.step < train.train_steps:
            train_iterator = iter(self._inputs.distributed("train", self.step))
            logging.info(
                "Training %s from step %d to %d (%d parameters) in %s.",
                self.config.get("preset", self.config.dataset.name),
                self.step, train.train_steps,
                config_checks.count_parameters(self.model), self.model_dir,
            )
        while self.step < train.train_steps:
            step_start = time.time()
            self.hooks.before_step(self, self.step)
            with self._inputs.reading("train", self.step):
                outputs = self._train_step(train_iterator)
            loss_sum, reg_loss, correct, count, grad_norm = (
                float(v) for v in outputs
            )
            step = self.step
            self.hooks.after_step(self, step, dict(
                loss=loss_sum, reg_loss=reg_loss, correct=correct, count=count,
                grad_norm=grad_norm,
            ))
            loss = loss_sum / count + reg_loss
            # With dynamic loss scaling, non-finite gradients are expected:
            # the optimiser skips those steps and lowers the scale.
            if not math.isfinite(loss) or not (
                math.isfinite(grad_norm) or self._loss_scaling
            ):
                self._summaries.flush()
                raise errors.NonFiniteLossError(
                    f"Training stopped at step {step}: the loss is {loss} "
                    f"(gradient norm {grad_norm}). "
                    f"{self._checkpoints.last_good_message()} "
                    "Lower config.train.optimizer.learning_rate or set "
                    "config.train.optimizer.clipnorm, then rerun to resume."
                )
            seconds = time.time() - step_start
            self._train_seconds.assign_add(seconds)
            if step > session_start_step + 1:
                steady["steps"] += 1
                steady["seconds"] += seconds
            window.add(loss_sum, reg_loss, correct, count, seconds, grad_norm)
            if step % train.log_every_steps == 0 or step == train.train_steps:
                window.report(self._summaries, step, train,
                              float(self.optimizer.learning_rate.numpy()))
            evaluated = step % train.eval_every_steps == 0 or step == train.train_steps
            if evaluated or step % train.checkpoint_every_steps == 0:
                self._check_finite_weights(step)
            # Order: evaluation line, checkpoint, then best. A crash in between
            # is repaired on resume: evaluations newer than the restored step
            # are redone, and `_reconcile_best` re-saves a best checkpoint that
            # the crash prevented.
            if evaluated:
                metrics = self._evaluate_and_record("valid", step)
            if evaluated or step % train.checkpoint_every_steps == 0:
                self._save("latest", step)
            if evaluated and (
                best is None or metrics["accuracy"] > best["metrics"]["accuracy"]
            ):
                best = dict(step=step, metrics=metrics)
                self._save_best(best)
        if best is None:
            # Nothing was trained in this session and nothing was recorded.
            metrics = self._evaluate_and_record("valid", self.step)
            best = dict(step=self.step, metrics=metrics)
        test_metrics = self._evaluate_and_record("test", self.step)
        train_seconds = float(self._train_seconds.numpy())
        steps_done = self.step
        results = dict(
            preset=self.config.get("preset"),
            dataset=self.config.dataset.name,
            model=self.config.model.get("name"),
            train_steps=steps_done,
            batch_size=train.batch_size,
            num_replicas=self.strategy.num_replicas_in_sync,
            num_parameters=config_checks.count_parameters(self.model),
            best_valid=best,
            test=test_metrics,
            train_seconds=train_seconds,
            examples_per_second=(
                steps_done * train.batch_size / train_seconds
                if train_seconds else None
            ),
            steady_examples_per_second=(
                steady["steps"] * train.batch_size / steady["seconds"]
                if steady["seconds"] else None
            ),
            session_steps=steps_done - session_start_step,
            session_wall_seconds=time.time() - start_wall,
        )
        if self.is_chief:
            self._run_dir.write_results(results)
        self._summaries.flush()
        logging.info(
            "Done: best valid accuracy %.4f at step %d, test accuracy %.4f.",
            best["metrics"]["accuracy"], best["step"], test_metrics["accuracy"],
        )
        self.hooks.on_train_end(self, results)
        return results

    def _check_finite_weights(self, step):
        """Refuses to evaluate or checkpoint NaN / infinite weights."""
        bad = [
            v.path for v in self.model.trainable_variables
            if not bool(tf.reduce_all(tf.math.is_finite(v)))
        ]
        if bad:
            self._summaries.flush()
            raise errors.NonFiniteLossError(
                f"Training stopped at step {step}: the weights "
                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} are NaN "
                f"or infinite. {self._checkpoints.last_good_message()} Lower "
                "config.train.optimizer.learning_rate or set "
                "config.train.optimizer.clipnorm, then rerun to resume."
            )

    def _save(self, kind, step):
        self.hooks.before_checkpoint(self, kind, step)
        path = self._checkpoints.save(kind, step)
        self.hooks.after_checkpoint(self, kind, step, path)
        return path

    def _save_best(self, best):
        self._save("best", best["step"])
        if self.is_chief:
            self._run_dir.write_best(best)

    def _reconcile_best(self):
        """The best validation up to the restored step, from `metrics.jsonl`.

        `metrics.jsonl` is the record (it is written before the checkpoint of
        the same step). When `best/` lags behind it because a crash came
        between the checkpoint and the best checkpoint of the restored step,
        the best checkpoint is saved again from the restored state.
        """
        best = self._run_dir.best_evaluation(self.step)
        if best is not None and self._run_dir.read_best() != best:
            if best["step"] == self.step:
                logging.warning(
                    "Saving the best checkpoint of step %d again (a crash "
                    "interrupted its write).", self.step,
                )
                self._save_best(best)
            else:
                logging.warning(
                    "%s does not match metrics.jsonl (best step %d); it is "
                    "rewritten when a better validation comes.",
                    self._run_dir.path(run_dir.BEST_DIR, run_dir.BEST_FILE),
                    best["step"],
                )
        return best

    def _evaluate_and_record(self, split, step):
        metrics = self.evaluate(split)
        logging.info(
            "%s at step %d: %s", split, step,
            "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in metrics.items()),
        )
        if not self.is_chief:
            return metrics
        self._summaries.scalars(split, metrics, step)
        if split == "valid":
            self._summaries.combining_weights(split, self.model, step)
        self._summaries.flush(split)
        self._run_dir.record_evaluation(step, split, metrics)
        return metrics


def train_and_evaluate(config, model_dir, *, strategy=None, hooks=()):
    """Trains and evaluates an experiment in `model_dir` (resuming if needed).

    Args:
        config: experiment `ml_collections.ConfigDict`
            (see `configs/experiment.py`).
        model_dir: str, directory of the run.
        strategy: optional `tf.distribute.Strategy` (default: from
            `config.train.distribution_strategy`).
        hooks: sequence of hooks (`hooks.Hook`).

    Returns:
        The results dict written to `model_dir/results.json`.

    Raises:
        ValueError / TypeError: for an invalid config.
        TrainerError: see `Trainer.train_and_evaluate`.
    """
    return Trainer(config, model_dir, strategy=strategy, hooks=hooks).train_and_evaluate()

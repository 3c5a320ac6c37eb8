"""The task of a run on TensorFlow: a `tf.distribute` strategy, compiled steps
and `tf.train.Checkpoint` state.

Keras' `model.fit` does not run under `MultiWorkerMirroredStrategy` with
Keras 3, so the steps are written with `strategy.run` over
`distribute_datasets_from_function`, a Keras 3 model and optimiser, and
`tf.train.Checkpoint` (which tracks Keras 3 models and optimisers, slots
included). The interface is `task.py`'s.
"""

import time

import keras
import ml_collections
import tensorflow as tf

from low_rank_local_connectivity.training import checkpointing
from low_rank_local_connectivity.training import distribution
from low_rank_local_connectivity.training import inputs
from low_rank_local_connectivity.training import steps
from low_rank_local_connectivity.training import task as task_lib

EVAL_SPLITS = ("valid", "test")


class TensorFlowTask:
    """Builds an experiment on TensorFlow (see `task.py` for the interface).

    Construction makes the process deterministic when the config asks for it,
    creates (or takes) the strategy, seeds Python, NumPy and TensorFlow
    (`keras.utils.set_random_seed(seed)`) and builds the model and optimiser
    under the strategy. Nothing is read from or written to a `model_dir`.

    Args:
        config: a validated experiment ConfigDict (copied, never modified).
        dataset: the run's `data.ResolvedDataset`.
        strategy: optional `tf.distribute.Strategy`; by default one is created
            from `config.train.distribution_strategy`.
        input_transform: optional function `(split, dataset) -> dataset`.
        init_from: optional mapping (`model_dir`, `checkpoint`) of initial
            model weights.

    Raises:
        ValueError: if a batch size is not divisible by the number of replicas.
    """

    def __init__(self, config, dataset, *, strategy=None, input_transform=None,
                 init_from=None):
        self.config = ml_collections.ConfigDict(config.to_dict())
        self.metadata = metadata = dataset.metadata
        train = self.config.train
        if train.deterministic:
            distribution.enable_determinism()
        self.strategy = strategy or distribution.create_strategy(
            train.distribution_strategy, train.tpu_address
        )
        self.num_replicas = self.strategy.num_replicas_in_sync
        task_lib.check_batch_sizes(train, self.num_replicas)
        self.is_chief = distribution.is_chief(self.strategy)
        self.loss_scaling = train.mixed_precision == "mixed_float16"
        self._inputs = inputs.Inputs(dataset, self.config, self.strategy, input_transform)
        keras.utils.set_random_seed(self.config.seed)
        with self.strategy.scope():
            self.model, self.optimizer = task_lib.build_model_and_optimizer(
                self.config, metadata, init_from)
            self._global_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            self._train_seconds = tf.Variable(
                0.0, dtype=tf.float64, trainable=False, name="train_seconds",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self._sync_statistics = distribution.make_sync_statistics(
            self.strategy, self.model
        )
        num_classes = metadata.num_classes
        self._top5 = num_classes >= task_lib.TOP5_MIN_CLASSES
        self._train_step = steps.make_train_step(
            self.strategy, self.model, self.optimizer, self._global_step, train,
            num_classes,
        )
        self._eval_step = steps.make_eval_step(
            self.strategy, self.model, num_classes, self._top5, train.jit_compile,
        )
        self._eval_datasets = {}
        self._train_iterator = None

    @property
    def step(self):
        return int(self._global_step.numpy())

    @property
    def train_seconds(self):
        return float(self._train_seconds.numpy())

    def add_train_seconds(self, seconds):
        self._train_seconds.assign_add(seconds)

    def learning_rate(self):
        return float(self.optimizer.learning_rate.numpy())

    def checkpoints(self, model_dir, manager_factory=None):
        """The `checkpointing.Checkpoints` of this task's state in `model_dir`."""
        return checkpointing.Checkpoints(
            tf.train.Checkpoint(
                model=self.model,
                optimizer=self.optimizer,
                global_step=self._global_step,
                train_seconds=self._train_seconds,
            ),
            model_dir, self.strategy, self.config.train.keep_checkpoints,
            self._global_step, before_save=self._sync_statistics,
            manager_factory=manager_factory,
        )

    def train_step(self):
        """Runs one training step on the next batch.

        The first call builds the training pipeline positioned at the current
        step (after a restore: the restored one).

        Returns:
            dict of Python floats: `loss` (summed cross-entropy), `reg_loss`,
            `correct`, `count` (real examples) and `grad_norm` (of the
            all-reduced, unscaled, unclipped gradient).
        """
        step = self.step
        if self._train_iterator is None:
            self._train_iterator = iter(self._inputs.distributed("train", step))
        with self._inputs.reading("train", step):
            outputs = self._train_step(self._train_iterator)
        loss, reg_loss, correct, count, grad_norm = (float(v) for v in outputs)
        return dict(loss=loss, reg_loss=reg_loss, correct=correct, count=count,
                    grad_norm=grad_norm)

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
                f"{EVAL_SPLITS}. Received: split={split!r}"
            )
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
        if self._top5:
            metrics["top5_accuracy"] = top5 / count
        return metrics

    def non_finite_variables(self):
        """Paths of the trainable variables holding NaN or infinite values."""
        return [
            v.path for v in self.model.trainable_variables
            if not bool(tf.reduce_all(tf.math.is_finite(v)))
        ]

    def measure_step_throughput(self, num_steps=20, warmup_steps=2):
        """Examples/s of the compiled training step alone, without input pipeline.

        Runs the task's own training step on the first training batch, cached
        in memory and repeated, and converts its outputs to Python floats as the
        training loop does. Compared with the `steady_examples_per_second` of
        `results.json` (the same step fed by the real pipeline) it shows the
        input-pipeline overhead. It trains the model: use a task of its own.

        Args:
            num_steps: timed steps.
            warmup_steps: untimed steps first (the first one traces).

        Returns:
            Examples per second over the timed steps.
        """
        task_lib.check_throughput_arguments(num_steps, warmup_steps)
        iterator = iter(self._inputs.distributed("train", one_batch_in_memory=True))
        for _ in range(warmup_steps):
            [float(v) for v in self._train_step(iterator)]
        start = time.perf_counter()
        for _ in range(num_steps):
            [float(v) for v in self._train_step(iterator)]
        seconds = time.perf_counter() - start
        return num_steps * self.config.train.batch_size / seconds

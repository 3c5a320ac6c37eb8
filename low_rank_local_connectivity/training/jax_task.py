"""The task of a run on JAX: jitted stateless steps, `keras.distribution` data
parallelism, NumPy input and Orbax checkpoints. No TensorFlow.

The model and optimiser are Keras 3 objects; a step reads their variables'
values, runs one jitted pure function (`model.stateless_call`,
`optimizer.stateless_apply`) and assigns the new values back, so that
callbacks see (and may change) the model between steps as on TensorFlow.

With `train.distribution_strategy='mirrored'` the model is built under
`keras.distribution.DataParallel` over every local device (variables
replicated, each global batch split along its batch axis) and XLA compiles one
SPMD program: gradients, batch-norm statistics and metrics are those of the
global batch. On CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=N`
gives N devices. Multi-host training ('multi_worker_mirrored', 'tpu') is not
supported on JAX yet and is refused in one line.

The input is the dataset's NumPy pipeline (`ResolvedDataset.numpy_batches`),
positioned exactly at the restored step. The interface is `task.py`'s.
"""

import contextlib
import os
import time

import jax
import jax.numpy as jnp
import keras
import ml_collections
import numpy as np

from low_rank_local_connectivity.training import task as task_lib

EVAL_SPLITS = ("valid", "test")
STRATEGIES = ("default", "mirrored")


def enable_determinism():
    """Deterministic XLA kernels where they are optional (GPU reductions).

    XLA on CPU is deterministic already; on GPU the flag must reach XLA before
    JAX starts its backend, so it is set here, in the environment, and takes
    effect when the first array is placed on the GPU.
    """
    flag = "--xla_gpu_deterministic_ops=true"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def create_distribution(name):
    """The `keras.distribution` of a strategy name (None: one device).

    Raises:
        ValueError: for a strategy JAX does not run here.
    """
    if name == "default":
        return None
    if name == "mirrored":
        return keras.distribution.DataParallel(
            devices=keras.distribution.list_devices()
        )
    raise ValueError(
        f"Invalid value for `config.train.distribution_strategy` on the JAX "
        f"backend. Expected one of {STRATEGIES}. Received: {name!r} (it needs "
        "the TensorFlow backend: KERAS_BACKEND=tensorflow)"
    )


class JaxTask:
    """Builds an experiment on JAX (see `task.py` for the interface).

    Args:
        config: a validated experiment ConfigDict (copied, never modified).
        dataset: the run's `data.ResolvedDataset` (its NumPy pipeline feeds
            the steps).
        strategy: unused on JAX (the distribution comes from the config);
            must be None.
        input_transform: optional function `(split, batches) -> batches` on
            the iterator of NumPy (images, labels, mask) batches.
        init_from: optional mapping (`model_dir`, `checkpoint`) of initial
            model weights.

    Raises:
        ValueError: for a precision, strategy or batch size JAX cannot run.
    """

    def __init__(self, config, dataset, *, strategy=None, input_transform=None,
                 init_from=None):
        if strategy is not None:
            raise ValueError(
                "Invalid value for argument `strategy`: a tf.distribute strategy "
                "does not apply on the JAX backend; set "
                "config.train.distribution_strategy instead."
            )
        self.config = ml_collections.ConfigDict(config.to_dict())
        self.metadata = metadata = dataset.metadata
        train = self.config.train
        if train.mixed_precision == "mixed_float16":
            raise ValueError(
                "Invalid value for `config.train.mixed_precision` on the JAX "
                "backend. Expected 'float32' or 'mixed_bfloat16' (dynamic loss "
                "scaling for 'mixed_float16' runs on TensorFlow). Received: "
                "'mixed_float16'"
            )
        if train.deterministic:
            enable_determinism()
        self.distribution = create_distribution(train.distribution_strategy)
        self.num_replicas = (
            1 if self.distribution is None else len(self.distribution.device_mesh.devices.flat)
        )
        task_lib.check_batch_sizes(train, self.num_replicas)
        self.is_chief = jax.process_index() == 0
        self.loss_scaling = False
        self._dataset = dataset
        self._transform = input_transform or (lambda split, batches: batches)
        keras.utils.set_random_seed(self.config.seed)
        with self._scope():
            self.model, self.optimizer = task_lib.build_model_and_optimizer(
                self.config, metadata, init_from)
        self._step = 0
        self._train_seconds = 0.0
        self._num_classes = metadata.num_classes
        self._top5 = self._num_classes >= task_lib.TOP5_MIN_CLASSES
        self._train_step = jax.jit(self._pure_train_step)
        self._eval_step = jax.jit(self._pure_eval_step)
        self._train_batches = None

    def _scope(self):
        if self.distribution is None:
            return contextlib.nullcontext()
        return self.distribution.scope()

    # ---------------------------------------------------------------- state

    @property
    def step(self):
        return self._step

    @property
    def train_seconds(self):
        return self._train_seconds

    def add_train_seconds(self, seconds):
        self._train_seconds += seconds

    def learning_rate(self):
        return float(self.optimizer.learning_rate)

    def _variables(self):
        return (self.model.trainable_variables, self.model.non_trainable_variables,
                self.optimizer.variables)

    def _values(self):
        return tuple([v.value for v in group] for group in self._variables())

    def _assign(self, values):
        for group, group_values in zip(self._variables(), values):
            for variable, value in zip(group, group_values):
                variable.assign(value)

    def state(self):
        """The checkpointed state: NumPy arrays of every variable, step, time."""
        trainable, non_trainable, optimizer = (
            [np.asarray(v) for v in group] for group in self._values()
        )
        return dict(trainable=trainable, non_trainable=non_trainable,
                    optimizer=optimizer, step=np.asarray(self._step, np.int64),
                    train_seconds=np.asarray(self._train_seconds, np.float64))

    def set_state(self, state):
        """Restores a `state()` dict into the variables, step and time."""
        self._assign((state["trainable"], state["non_trainable"], state["optimizer"]))
        self._step = int(state["step"])
        self._train_seconds = float(state["train_seconds"])
        self._train_batches = None  # Re-positioned at the restored step.

    def checkpoints(self, model_dir, manager_factory=None):
        """The `orbax_checkpointing.Checkpoints` of this task in `model_dir`."""
        from low_rank_local_connectivity.training import orbax_checkpointing

        if manager_factory is not None:
            raise ValueError(
                "Invalid value for argument `checkpoint_manager_factory`: it "
                "replaces tf.train.CheckpointManager and has no effect on JAX."
            )
        return orbax_checkpointing.Checkpoints(
            self, model_dir, self.config.train.keep_checkpoints
        )

    # ---------------------------------------------------------------- steps

    def _logits(self, trainable, non_trainable, images, training):
        outputs = self.model.stateless_call(
            trainable, non_trainable, images, training=training, return_losses=training,
        )
        return outputs

    def _pure_train_step(self, values, images, labels, mask):
        trainable, non_trainable, optimizer_values = values
        train = self.config.train

        def loss_fn(trainable_values):
            logits, new_non_trainable, losses = self._logits(
                trainable_values, non_trainable, images, True
            )
            per_example = _cross_entropy(
                logits, labels, self._num_classes, train.label_smoothing
            )
            reg_loss = (
                sum(jnp.asarray(loss, jnp.float32) for loss in losses)
                if losses else jnp.float32(0.0)
            )
            loss = jnp.sum(per_example * mask) / train.batch_size + reg_loss
            return loss, (logits, new_non_trainable, per_example, reg_loss)

        (_, (logits, new_non_trainable, per_example, reg_loss)), grads = (
            jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        )
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                                 for g in grads))
        if train.optimizer.clipnorm:
            clip = train.optimizer.clipnorm
            grads = [g * (clip / jnp.maximum(grad_norm, clip)) for g in grads]
        new_trainable, new_optimizer = self.optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
        correct = jnp.sum(
            (jnp.argmax(logits, -1).astype(jnp.int32) == labels) * mask
        )
        sums = (jnp.sum(per_example * mask), reg_loss, correct, jnp.sum(mask), grad_norm)
        return (new_trainable, new_non_trainable, new_optimizer), sums

    def _pure_eval_step(self, values, images, labels, mask):
        trainable, non_trainable = values
        logits, _ = self._logits(trainable, non_trainable, images, False)
        logits = logits.astype(jnp.float32)
        per_example = _cross_entropy(logits, labels, self._num_classes, 0.0)
        correct = (jnp.argmax(logits, -1).astype(jnp.int32) == labels)
        if self._top5:
            target = jnp.take_along_axis(logits, labels[:, None], axis=-1)
            top5 = jnp.sum(logits > target, axis=-1) < 5
        else:
            top5 = jnp.zeros_like(mask)
        return [jnp.sum(value * mask) for value in
                (per_example, correct.astype(jnp.float32), top5.astype(jnp.float32),
                 jnp.ones_like(mask))]

    def _placed(self, batch):
        """A NumPy batch on the devices (split along the batch axis)."""
        if self.distribution is None:
            return tuple(jnp.asarray(x) for x in batch)
        return tuple(
            jax.device_put(x, self.distribution.get_data_layout(x.shape).backend_layout)
            for x in batch
        )

    def _batches(self, split, *, is_training, start_step=0):
        train = self.config.train
        exact = train.resume_input_position
        batches = self._dataset.numpy_batches(
            split, is_training=is_training,
            batch_size=train.batch_size if is_training else train.eval_batch_size,
            seed=self.config.seed + (0 if exact or not is_training else start_step),
            start_step=start_step if exact else 0,
        )
        return self._transform(split, batches)

    def train_step(self):
        """Runs one training step on the next batch (see `task.py`)."""
        if self._train_batches is None:
            self._train_batches = self._batches("train", is_training=True,
                                                start_step=self._step)
        images, labels, mask = self._placed(next(self._train_batches))
        values = self._values()
        new_values, sums = self._train_step(values, images, labels, mask)
        self._assign(new_values)
        self._step += 1
        loss, reg_loss, correct, count, grad_norm = (float(v) for v in sums)
        return dict(loss=loss, reg_loss=reg_loss, correct=correct, count=count,
                    grad_norm=grad_norm)

    def evaluate(self, split):
        """Evaluates the current model on 'valid' or 'test' (see `tf_task`)."""
        if split not in EVAL_SPLITS:
            raise ValueError(
                f"Invalid value for argument `split`. Expected one of "
                f"{EVAL_SPLITS}. Received: split={split!r}"
            )
        trainable, non_trainable, _ = self._values()
        totals = None
        for batch in self._batches(split, is_training=False):
            sums = [float(s) for s in self._eval_step(
                (trainable, non_trainable), *self._placed(batch))]
            totals = sums if totals is None else [a + b for a, b in zip(totals, sums)]
        loss_sum, correct, top5, count = totals
        metrics = dict(loss=loss_sum / count, accuracy=correct / count,
                       num_examples=int(count))
        if self._top5:
            metrics["top5_accuracy"] = top5 / count
        return metrics

    def non_finite_variables(self):
        """Paths of the trainable variables holding NaN or infinite values."""
        return [v.path for v in self.model.trainable_variables
                if not bool(jnp.all(jnp.isfinite(v.value)))]

    def measure_step_throughput(self, num_steps=20, warmup_steps=2):
        """Examples/s of the compiled training step alone on one cached batch."""
        task_lib.check_throughput_arguments(num_steps, warmup_steps)
        batch = self._placed(next(self._batches("train", is_training=True)))

        def run(steps):
            for _ in range(steps):
                values, sums = self._train_step(self._values(), *batch)
                self._assign(values)
                self._step += 1
                [float(v) for v in sums]

        run(warmup_steps)
        start = time.perf_counter()
        run(num_steps)
        return num_steps * self.config.train.batch_size / (time.perf_counter() - start)


def _cross_entropy(logits, labels, num_classes, label_smoothing):
    """Per-example softmax cross-entropy in float32, with label smoothing."""
    logits = logits.astype(jnp.float32)
    targets = jax.nn.one_hot(labels, num_classes)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)

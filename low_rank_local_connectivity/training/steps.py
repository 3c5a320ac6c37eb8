"""The compiled training and evaluation steps (pure functions of their inputs).

Each step runs `strategy.run` over one global batch and returns global sums; the
outer loop (`loop.py`) turns them into metrics. With `distribution.py` and
`checkpointing.py`, this is the TensorFlow-specific part of the training loop.
"""

import tensorflow as tf


def _losses(model, images, labels, training, label_smoothing, num_classes):
    """Returns float32 logits (b, classes) and cross-entropy (b,)."""
    logits = tf.cast(model(images, training=training), tf.float32)
    targets = tf.one_hot(labels, num_classes)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    per_example = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
    return logits, per_example


def make_train_step(strategy, model, optimizer, global_step, train_config,
                    num_classes):
    """Returns a tf.function running one step on the next batch of an iterator.

    It returns the global sums (cross-entropy, regularisation loss, correct
    predictions, real examples) and the norm of the (unscaled, unclipped)
    all-reduced gradient, and increments `global_step`.

    Args:
        strategy: the `tf.distribute.Strategy` the variables belong to.
        model, optimizer: Keras model and optimiser (built under `strategy`).
        global_step: int64 `tf.Variable` counting the steps.
        train_config: the `train` section of an experiment config.
        num_classes: int.
    """
    train = train_config
    replicas = strategy.num_replicas_in_sync
    loss_scaling = train.mixed_precision == "mixed_float16"
    clipnorm = train.optimizer.clipnorm

    def compute_gradients(images, labels, mask):
        with tf.GradientTape() as tape:
            logits, per_example = _losses(
                model, images, labels, True, train.label_smoothing, num_classes
            )
            data_loss = tf.reduce_sum(per_example * mask) / train.batch_size
            reg_loss = (
                tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
                if model.losses else tf.constant(0.0)
            )
            # Gradients are summed over replicas: each contributes 1/N of
            # the regulariser.
            loss = data_loss + reg_loss / replicas
            if loss_scaling:
                loss = optimizer.scale_loss(loss)
        grads = tape.gradient(loss, model.trainable_variables)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels),
                    tf.float32) * mask
        )
        return grads, tf.reduce_sum(per_example * mask), reg_loss, correct

    if train.jit_compile:
        compute_gradients = tf.function(compute_gradients, jit_compile=True)

    def replica_step(images, labels, mask):
        grads, loss_sum, reg_loss, correct = compute_gradients(images, labels, mask)
        # Sum over replicas here so that clipping sees the true gradient.
        grads = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, grads
        )
        scale = optimizer.dynamic_scale if loss_scaling else 1.0
        grad_norm = tf.linalg.global_norm(grads)
        if clipnorm:
            grads, _ = tf.clip_by_global_norm(
                grads, clipnorm * scale, use_norm=grad_norm
            )
        # The Keras optimiser sums the gradients over replicas once more:
        # hand it 1/N of the (identical) reduced gradient on each replica.
        grads = [g / replicas for g in grads]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        sums = (loss_sum, reg_loss / replicas, correct, tf.reduce_sum(mask))
        return sums, grad_norm / tf.cast(scale, grad_norm.dtype)

    @tf.function
    def train_step(iterator):
        images, labels, mask = next(iterator)
        sums, grad_norm = strategy.run(replica_step, args=(images, labels, mask))
        global_step.assign_add(1)
        return [
            strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for value in sums
        ] + [strategy.reduce(tf.distribute.ReduceOp.MEAN, grad_norm, axis=None)]

    return train_step


def make_eval_step(strategy, model, num_classes, top5, jit_compile):
    """Returns a tf.function evaluating one padded, masked global batch.

    It returns the global sums of cross-entropy (no label smoothing), correct
    predictions, correct top-5 predictions (zeros unless `top5`) and real
    examples.
    """

    def replica_step(images, labels, mask):
        logits, per_example = _losses(model, images, labels, False, 0.0, num_classes)
        correct = tf.cast(
            tf.equal(tf.argmax(logits, -1, tf.int32), labels), tf.float32
        )
        if top5:
            top5_correct = tf.cast(tf.math.in_top_k(labels, logits, 5), tf.float32)
        else:
            top5_correct = tf.zeros_like(mask)
        return [
            tf.reduce_sum(value * mask)
            for value in (per_example, correct, top5_correct, tf.ones_like(mask))
        ]

    if jit_compile:
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def eval_step(images, labels, mask):
        outputs = strategy.run(replica_step, args=(images, labels, mask))
        return [
            strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for value in outputs
        ]

    return eval_step

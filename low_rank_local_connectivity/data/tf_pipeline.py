"""The tf.data input pipeline of one split: shard, shuffle, preprocess, batch.

`batches` turns a dataset of (raw image, int32 label) records into
(image, label, mask) batches. This module imports TensorFlow; the package
imports it only for `ResolvedDataset.make_dataset`.
"""

import functools

import numpy as np
import tensorflow as tf

from low_rank_local_connectivity.data import preprocessing


def array_records(images, labels):
    """Dataset of (uint8 image, int32 label) records from in-memory arrays."""
    return tf.data.Dataset.from_tensor_slices((images, labels))


def _pad_batch(images, labels, masks, batch_size):
    """Pads a (possibly short) batch to `batch_size` with mask 0."""
    missing = batch_size - tf.shape(labels)[0]
    images = tf.pad(images, [[0, missing]] + [[0, 0]] * (images.shape.rank - 1))
    labels = tf.pad(labels, [[0, missing]])
    masks = tf.pad(masks, [[0, missing]])
    return (
        tf.ensure_shape(images, [batch_size] + images.shape[1:].as_list()),
        tf.ensure_shape(labels, [batch_size]),
        tf.ensure_shape(masks, [batch_size]),
    )


def batches(records, spec, image_shape, *, batch_size, is_training, seed,
            shuffle_buffer_size, input_context):
    """The batched pipeline of a split (see `ResolvedDataset.make_dataset`).

    Args:
        records: `tf.data.Dataset` of (raw image, int32 label), in the
            split's order.
        spec: the dataset's `names.Spec` (completed from TFDS for TFDS data).
        image_shape: (H, W, C) after preprocessing.
        batch_size: int, GLOBAL batch size.
        is_training: bool.
        seed: optional int.
        shuffle_buffer_size: int.
        input_context: optional `tf.distribute.InputContext`.

    Returns:
        `tf.data.Dataset` of (image float32 (b, H, W, C), label int32 (b,),
        mask float32 (b,)), b the per-replica batch size.
    """
    if input_context is not None:
        per_replica_batch_size = input_context.get_per_replica_batch_size(batch_size)
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
    else:
        per_replica_batch_size, num_pipelines, pipeline_id = batch_size, 1, 0

    if num_pipelines > 1:
        records = records.shard(num_pipelines, pipeline_id)
    if is_training:
        records = records.shuffle(
            shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True
        ).repeat()

    # Per-element stateless seeds: (seed, pipeline) folded with the element index,
    # so input pipelines draw independent random preprocessing.
    if seed is None:
        base_seed = [int(np.random.default_rng().integers(2**31)), pipeline_id]
    else:
        base_seed = [seed, pipeline_id]
    base_seed = tf.constant(base_seed, tf.int64)

    def preprocess(index, record):
        image, label = record
        element_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        if spec.imagenet:
            image = preprocessing.preprocess_imagenet(image, element_seed, is_training)
        else:
            image = preprocessing.preprocess_small(image, element_seed, spec)
        image = tf.ensure_shape(image, image_shape)
        return image, label, tf.constant(1.0, tf.float32)

    def preprocess_batch(images, labels):
        images = preprocessing.preprocess_small(images, None, spec)
        images = tf.ensure_shape(images, (None, *image_shape))
        return images, labels, tf.ones_like(labels, tf.float32)

    if spec.imagenet or spec.translate_to is not None:
        dataset = records.enumerate().map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(per_replica_batch_size, drop_remainder=is_training)
    else:
        # No per-example randomness: one map call per batch instead of one per
        # example (the same values; on 2 cores the per-example calls cost a few
        # percent of a training step).
        dataset = records.batch(per_replica_batch_size, drop_remainder=is_training)
        dataset = dataset.map(preprocess_batch, num_parallel_calls=tf.data.AUTOTUNE)
    if not is_training:
        dataset = dataset.map(
            functools.partial(_pad_batch, batch_size=per_replica_batch_size)
        )
    return dataset.prefetch(tf.data.AUTOTUNE)

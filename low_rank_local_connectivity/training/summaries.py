"""TensorBoard summaries of a run (scalars, combining-weight images) and its
progress lines.

TensorBoard's 'scalars' and 'images' plugins read these tensor summaries (the
format of `tensorboard.summary.v2`); writing them with the core
`tf.summary.write` keeps TensorBoard an optional, viewer-only dependency.
"""

import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from low_rank_local_connectivity import visualization


def _plugin_metadata(plugin_name):
    return tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
            plugin_name=plugin_name
        )
    )


_SCALAR_METADATA = _plugin_metadata("scalars")
_IMAGE_METADATA = _plugin_metadata("images")


def write_scalar(name, value, step):
    """Writes a TensorBoard scalar to the default summary writer."""
    tf.summary.write(
        name, tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA
    )


def write_images(name, images, step):
    """Writes images to the default summary writer (TensorBoard format).

    Args:
        name: str, summary tag.
        images: uint8 array (N, H, W, C) with C in {1, 3, 4}.
        step: int.
    """
    images = np.asarray(images, np.uint8)
    height, width = images.shape[1:3]
    encoded = [tf.io.encode_png(image) for image in images]
    tensor = tf.stack([tf.as_string(width), tf.as_string(height)] + encoded)
    tf.summary.write(name, tensor, step=step, metadata=_IMAGE_METADATA)


def lrlc_layers_with_fixed_weights(model):
    """LRLC layers of `model` (nested ones too) whose combining weights are
    fixed (not input dependent)."""
    return [
        layer for layer in visualization.lrlc_layers(model)
        if not layer.get_config()["input_dependent"]
    ]


def combining_weight_images(layer):
    """Renders the combining weights of an LRLC layer as K grey images.

    Args:
        layer: `LowRankLocallyConnected2D` with fixed combining weights.

    Returns:
        uint8 array (K, H_out, W_out, 1); (K, H_out, 1, 1) when only rows are
        shared and (K, 1, W_out, 1) when only columns are. The layer's minimum
        weight is black and its maximum white.
    """
    weights = np.asarray(keras.ops.convert_to_numpy(layer.combining_weights))
    if weights.ndim == 2:
        row_only = layer.get_config()["share_row_combining_weights"]
        weights = weights[:, None, :] if row_only else weights[None, :, :]
    weights = np.moveaxis(weights, -1, 0)[..., None].astype(np.float64)
    low, high = weights.min(), weights.max()
    scaled = (weights - low) / (high - low) if high > low else weights * 0 + 0.5
    return np.round(scaled * 255).astype(np.uint8)


class Summaries:
    """One event-file writer per split under `model_dir` (no-op on non-chiefs).

    Args:
        model_dir: str.
        enabled: bool, False for workers that are not the chief.
    """

    def __init__(self, model_dir, enabled):
        self._model_dir = model_dir
        self._enabled = enabled
        self._writers = {}

    def _writer(self, split):
        if split not in self._writers:
            self._writers[split] = (
                tf.summary.create_file_writer(os.path.join(self._model_dir, split))
                if self._enabled else tf.summary.create_noop_writer()
            )
        return self._writers[split]

    def scalars(self, split, values, step):
        """Writes the scalars `{name: value}` of a split at `step`."""
        with self._writer(split).as_default():
            for name, value in values.items():
                write_scalar(name, value, step)

    def combining_weights(self, split, model, step):
        """Writes the combining weights of every fixed-weight LRLC layer as images."""
        with self._writer(split).as_default():
            for layer in lrlc_layers_with_fixed_weights(model):
                write_images(
                    f"combining_weights/{layer.name}",
                    combining_weight_images(layer), step,
                )

    def flush(self, split=None):
        """Flushes one split's writer, or all of them."""
        for name, writer in self._writers.items():
            if split is None or name == split:
                writer.flush()


def _format_duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainingWindow:
    """Training metrics accumulated between two progress lines."""

    def __init__(self):
        self._reset()

    def _reset(self):
        self.loss = self.correct = self.count = self.seconds = self.grad_norm = 0.0
        self.steps = 0

    def add(self, loss_sum, reg_loss, correct, count, seconds, grad_norm):
        """Adds one step's global sums, its time and its gradient norm."""
        self.loss += loss_sum + reg_loss * count
        self.correct += correct
        self.count += count
        self.steps += 1
        self.seconds += seconds
        self.grad_norm += grad_norm

    def report(self, summaries, step, train_config, learning_rate):
        """Logs the progress line, writes the training scalars, and restarts.

        Times are those of the training steps only.
        """
        train = train_config
        loss = self.loss / self.count
        accuracy = self.correct / self.count
        examples_per_second = self.steps * train.batch_size / max(self.seconds, 1e-9)
        remaining = (train.train_steps - step) * self.seconds / self.steps
        logging.info(
            "step %d/%d  loss %.4f  accuracy %.4f  lr %.3g  %.0f examples/s  "
            "ETA %s", step, train.train_steps, loss, accuracy, learning_rate,
            examples_per_second, _format_duration(remaining),
        )
        summaries.scalars("train", dict(
            loss=loss, accuracy=accuracy, learning_rate=learning_rate,
            examples_per_second=examples_per_second,
            gradient_norm=self.grad_norm / self.steps,
        ), step)
        self._reset()

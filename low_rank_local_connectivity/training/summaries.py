"""TensorBoard event files: one writer per split, scalars and PNG images.

TensorBoard's 'scalars' and 'images' plugins read these tensor summaries (the
format of `tensorboard.summary.v2`); writing them with the core
`tf.summary.write` keeps TensorBoard an optional, viewer-only dependency.
"""

import io
import os

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


def fixed_combining_weights(layer):
    """The fixed combining weights of an LRLC layer as (K, H_out, W_out).

    A layer sharing only its rows gives (K, H_out, 1), only its columns
    (K, 1, W_out).
    """
    import keras

    weights = np.asarray(keras.ops.convert_to_numpy(layer.combining_weights), np.float64)
    if weights.ndim == 2:
        row_only = layer.get_config()["share_row_combining_weights"]
        weights = weights[:, None, :] if row_only else weights[None, :, :]
    return np.moveaxis(weights, -1, 0)


def combining_weight_png(layer, title):
    """PNG bytes of the heat maps (with colour scale) of a fixed LRLC layer."""
    buffer = io.BytesIO()
    visualization.plot_combining_weights(
        fixed_combining_weights(layer), buffer, title=title
    )
    return buffer.getvalue()


def _png_size(png):
    """(width, height) from a PNG's IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


class SummaryWriters:
    """One event-file writer per split under `model_dir`.

    Args:
        model_dir: str.
    """

    def __init__(self, model_dir):
        self._model_dir = model_dir
        self._writers = {}

    def _writer(self, split):
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(
                os.path.join(self._model_dir, split)
            )
        return self._writers[split]

    def scalars(self, split, values, step):
        """Writes the scalars `{name: value}` of a split at `step`."""
        with self._writer(split).as_default():
            for name, value in values.items():
                tf.summary.write(
                    name, tf.constant(value, tf.float32), step=step,
                    metadata=_SCALAR_METADATA,
                )

    def png(self, split, name, png, step):
        """Writes one PNG image (bytes) of a split at `step`."""
        width, height = _png_size(png)
        tensor = tf.stack([tf.as_string(width), tf.as_string(height), png])
        with self._writer(split).as_default():
            tf.summary.write(name, tensor, step=step, metadata=_IMAGE_METADATA)

    def flush(self, split=None):
        """Flushes one split's writer, or all of them."""
        for name, writer in self._writers.items():
            if split is None or name == split:
                writer.flush()

"""Coordinate channels for CoordConv (Liu et al., 2018)."""

import keras
import numpy as np
from keras import ops

from low_rank_local_connectivity.layers.base import SERIALIZATION_PACKAGE
from low_rank_local_connectivity.layers.base import BaseSpatialLayer


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CoordinateChannels(BaseSpatialLayer):
    """Appends row and column coordinate channels (CoordConv, docs/design.md §2).

    The row channel holds linspace(-1, 1, H) along the height, the column channel
    linspace(-1, 1, W) along the width; they are appended after the input channels.

    Args:
      data_format: 'channels_last' or 'channels_first' (None: Keras' default).
      **kwargs: base `Layer` arguments.

    Input shape:
      (batch, H, W, C) or (batch, C, H, W), with H and W known.

    Output shape:
      (batch, H, W, C + 2) or (batch, C + 2, H, W).
    """

    def __init__(self, data_format="channels_last", **kwargs):
        super().__init__(data_format=data_format, **kwargs)

    def build(self, input_shape):
        _, height, width, _ = self._channels_last_shape(input_shape)
        if height is None or width is None:
            raise ValueError(
                f"`{type(self).__name__}` needs a known input height and width. "
                f"Received input_shape={tuple(input_shape)}"
            )
        rows, cols = np.meshgrid(
            np.linspace(-1.0, 1.0, height), np.linspace(-1.0, 1.0, width), indexing="ij"
        )
        self._coordinates = np.stack([rows, cols], axis=-1).astype(np.float32)

    def call(self, inputs):
        inputs = self._to_channels_last(inputs)
        coordinates = ops.cast(self._coordinates, inputs.dtype)
        coordinates = ops.zeros_like(inputs[..., :1]) + coordinates
        outputs = ops.concatenate([inputs, coordinates], axis=-1)
        return self._from_channels_last(outputs)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = self._channels_last_shape(input_shape)
        return self._output_shape(batch, height, width, channels + 2)

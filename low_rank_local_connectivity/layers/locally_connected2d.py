"""A 2-D locally connected layer, which Keras 3 no longer has."""

import keras
from keras import ops

from low_rank_local_connectivity.layers.base import SERIALIZATION_PACKAGE
from low_rank_local_connectivity.layers.base import BaseLocallyConnected2D
from low_rank_local_connectivity.layers.ops import position_major_patches
from low_rank_local_connectivity.validation import standardize_pair


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class LocallyConnected2D(BaseLocallyConnected2D):
    """2-D locally connected layer: a convolution whose weights are not shared.

    Keras 3 removed `LocallyConnected2D`; this is its replacement:

        y[b, i, j, f] = sum_{p} patch(x)[b, i, j, p] * kernel[i, j, p, f] + bias[i, j, f]

    computed position-major: the input is transposed once to (H, W, B, C), the
    patches are kh * kw strided slices of it concatenated on the channel axis,
    giving (H_out * W_out, B, kh * kw * C) without any further transpose, and one
    batched matrix product with the (H_out * W_out, kh * kw * C, F) kernel
    evaluates every position (see `position_major_patches` for its gradient). A
    batch-major `extract_patches` + `einsum` was 3x slower forward (the einsum
    transposes the patch tensor) and its gradient is a slow scatter.

    Args:
      filters: int, the number of output channels F.
      kernel_size: int or tuple of 2 ints.
      strides: int or tuple of 2 ints.
      padding: 'valid' or 'same'.
      data_format: 'channels_last' or 'channels_first' (None: Keras' default).
      activation: activation applied to the output.
      use_bias: bool, whether to add a per-position, per-channel bias.
      kernel_initializer, bias_initializer: initializers.
      kernel_regularizer, bias_regularizer, activity_regularizer: regularizers.
      kernel_constraint, bias_constraint: constraints.
      **kwargs: base `Layer` arguments.

    Input shape:
      channels_last: (batch, H, W, C_in); channels_first: (batch, C_in, H, W); H and
      W must be known at build time.

    Output shape:
      channels_last: (batch, H_out, W_out, F); channels_first: (batch, F, H_out, W_out).

    Weights:
      `kernel` (H_out, W_out, kh, kw, C_in, F) and `bias` (H_out, W_out, F).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format="channels_last",
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(
            filters=filters, strides=strides, padding=padding, data_format=data_format,
            activation=activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint,
            **kwargs,
        )
        self.kernel_size = standardize_pair("kernel_size", kernel_size)

    def _window(self):
        return self.kernel_size, (1, 1)

    def build(self, input_shape):
        _, height, width, channels = self._channels_last_shape(input_shape)
        out_height, out_width = self._output_spatial_shape(height, width)
        if height is None or width is None or out_height < 1 or out_width < 1:
            raise ValueError(
                f"`{type(self).__name__}` needs a known input height and width that "
                f"fit kernel_size={self.kernel_size} with padding='{self.padding}'. "
                f"Received input_shape={tuple(input_shape)}"
            )
        self._set_input_channels(channels)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(out_height, out_width, *self.kernel_size, channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(out_height, out_width, self.filters),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def _position_major_patches(self, inputs):
        """(H_out * W_out, B, kh * kw * C_in) patches, features ordered (kh, kw, C_in)."""
        spatial_first = (1, 2, 0, 3) if self.data_format == "channels_last" else (2, 3, 0, 1)
        x = ops.transpose(inputs, spatial_first)  # (H, W, B, C_in)
        out_height, out_width = self.kernel.shape[:2]
        if self.padding == "same":
            pads = [
                max((out - 1) * stride + kernel - size, 0)
                for out, stride, kernel, size in zip(
                    (out_height, out_width), self.strides, self.kernel_size, x.shape[:2]
                )
            ]
            x = ops.pad(x, [(p // 2, p - p // 2) for p in pads] + [(0, 0), (0, 0)])
        patches = position_major_patches(
            x, self.kernel_size, self.strides, (out_height, out_width)
        )
        return ops.reshape(patches, (out_height * out_width, -1, patches.shape[-1]))

    def call(self, inputs):
        out_height, out_width = self.kernel.shape[:2]
        kernel = ops.reshape(self.kernel, (out_height * out_width, -1, self.filters))
        # (H_out * W_out, B, F) -> (B, H_out, W_out, F).
        outputs = ops.matmul(self._position_major_patches(inputs), kernel)
        outputs = ops.reshape(outputs, (out_height, out_width, -1, self.filters))
        outputs = ops.transpose(outputs, (2, 0, 1, 3))
        if self.bias is not None:
            outputs = outputs + self.bias
        return self._activation_in_data_format(outputs)

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size})
        return config

"""Base classes of the 2-D layers: the arguments they share, handled once.

`BaseSpatialLayer` is any layer of 4-D image batches in either data format: it
normalises `data_format`, checks the input rank and channels (`InputSpec`) and
moves tensors to and from channels_last, in which every layer computes.
`BaseLocallyConnected2D` adds what a layer that slides a kernel window over the
input has (as Keras' `BaseConv` does for convolutions): `filters`, `strides`,
`padding`, the activation, the bias switch, the kernel and bias initializers,
regularizers and constraints, the output size, `compute_output_shape` and the
config of all of these.
"""

import keras
from keras import ops

from low_rank_local_connectivity.layers.ops import conv_output_length
from low_rank_local_connectivity.validation import positive_int
from low_rank_local_connectivity.validation import standardize_choice
from low_rank_local_connectivity.validation import standardize_data_format
from low_rank_local_connectivity.validation import standardize_pair

PADDINGS = ("valid", "same")
# The package of the layers' registered serialisation names ("package>Class").
SERIALIZATION_PACKAGE = "low_rank_local_connectivity"


def channels_last_shape(input_shape, data_format, layer_name):
    """(batch, height, width, channels) of a 4-D input shape.

    Raises:
      ValueError: naming `layer_name`, for a rank other than 4 or an unknown
        channel dimension.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 4:
        raise ValueError(
            f"`{layer_name}` expects 4-D inputs (batch, height, width, channels) "
            f"or (batch, channels, height, width). Received input_shape={input_shape}"
        )
    if data_format == "channels_first":
        batch, channels, height, width = input_shape
    else:
        batch, height, width, channels = input_shape
    if channels is None:
        raise ValueError(
            f"The channel dimension of the inputs to `{layer_name}` must be "
            f"defined. Received input_shape={input_shape} "
            f"(data_format={data_format!r})"
        )
    return batch, height, width, channels


class BaseSpatialLayer(keras.layers.Layer):
    """Base of the layers of (batch, H, W, C) or (batch, C, H, W) images.

    Args:
      data_format: 'channels_last' or 'channels_first' (case-insensitive); None
        means `keras.config.image_data_format()`.
      **kwargs: base `Layer` arguments.

    Raises:
      ValueError: for an unknown `data_format`.
    """

    def __init__(self, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format)
        self._channel_axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _channels_last_shape(self, input_shape):
        """(batch, height, width, channels) of an input shape in the layer's format."""
        return channels_last_shape(input_shape, self.data_format, type(self).__name__)

    def _set_input_channels(self, channels):
        """From build on, inputs must have `channels` channels."""
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis: channels}
        )

    def _to_channels_last(self, inputs):
        if self.data_format == "channels_first":
            return ops.transpose(inputs, (0, 2, 3, 1))
        return inputs

    def _from_channels_last(self, outputs):
        if self.data_format == "channels_first":
            return ops.transpose(outputs, (0, 3, 1, 2))
        return outputs

    def _output_shape(self, batch, height, width, channels):
        """A shape in the layer's data format."""
        if self.data_format == "channels_first":
            return (batch, channels, height, width)
        return (batch, height, width, channels)

    def get_config(self):
        config = super().get_config()
        config.update({"data_format": self.data_format})
        return config


class BaseLocallyConnected2D(BaseSpatialLayer):
    """Base of the layers whose `filters` outputs see a kernel window of the input.

    Subclasses hold their kernel's geometry and say, with `_window`, which kernel
    size and dilation set the output size; their `call` computes channels_last
    outputs and ends with `_activation_in_data_format`.

    Args:
      filters: int, the number of output channels F.
      strides: int or tuple of 2 ints.
      padding: 'valid' or 'same' (case-insensitive).
      data_format: see `BaseSpatialLayer`.
      activation: activation applied to the output (name or callable).
      use_bias: bool, whether the layer adds a bias.
      kernel_initializer, bias_initializer: initializers.
      kernel_regularizer, bias_regularizer, activity_regularizer: regularizers.
      kernel_constraint, bias_constraint: constraints.
      **kwargs: base `Layer` arguments.

    Raises:
      ValueError: for an invalid `filters`, `strides`, `padding` or `data_format`.
    """

    def __init__(
        self,
        filters,
        strides,
        padding,
        data_format,
        activation,
        use_bias,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        activity_regularizer,
        kernel_constraint,
        bias_constraint,
        **kwargs,
    ):
        super().__init__(
            data_format=data_format, activity_regularizer=activity_regularizer, **kwargs
        )
        self.filters = positive_int("filters", filters)
        self.strides = standardize_pair("strides", strides)
        self.padding = standardize_choice("padding", padding, PADDINGS)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _window(self):
        """(kernel_size, dilations), pairs of ints, that set the output size."""
        raise NotImplementedError

    def _output_spatial_shape(self, height, width):
        """(H_out, W_out) for an input of (height, width); None stays None."""
        kernel_size, dilations = self._window()
        return tuple(
            conv_output_length(size, kernel, stride, dilation, self.padding)
            for size, kernel, stride, dilation in zip(
                (height, width), kernel_size, self.strides, dilations
            )
        )

    def _activation_in_data_format(self, outputs):
        """Channels_last outputs through the activation, in the layer's data format."""
        if self.activation is not None:
            outputs = self.activation(outputs)
        return self._from_channels_last(outputs)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = self._channels_last_shape(input_shape)
        out_height, out_width = self._output_spatial_shape(height, width)
        return self._output_shape(batch, out_height, out_width, self.filters)

    def get_config(self):
        config = super().get_config()
        serialize_regularizer = keras.regularizers.serialize
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "padding": self.padding,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": serialize_regularizer(self.kernel_regularizer),
                "bias_regularizer": serialize_regularizer(self.bias_regularizer),
                "activity_regularizer": serialize_regularizer(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config

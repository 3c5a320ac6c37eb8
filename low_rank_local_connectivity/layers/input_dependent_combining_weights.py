"""The network that predicts LRLC combining weights from the input (design §1)."""

import keras
from keras import ops

from low_rank_local_connectivity.layers.base import SERIALIZATION_PACKAGE
from low_rank_local_connectivity.layers.base import channels_last_shape
from low_rank_local_connectivity.layers.ops import align_corners_resize_matrix
from low_rank_local_connectivity.layers.ops import compiling_with_xla
from low_rank_local_connectivity.validation import positive_int
from low_rank_local_connectivity.validation import standardize_pair

# Dilations of the 3x3 depthwise branches of the network.
INPUT_DEPENDENT_DILATIONS = (1, 2, 4, 8)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class InputDependentCombiningWeights(keras.layers.Layer):
    """Predicts combining-weight logits for every example (docs/design.md §1).

    From a channels_last input x (B, H, W, C_in):
    1. z = 1x1 convolution to K channels (with bias);
    2. branches resized to `output_size` by bilinear interpolation with corner
       alignment: z, the spatial mean of z (broadcast), and 3x3 depthwise
       convolutions of z ('valid', with bias) at dilations r in (1, 2, 4, 8) with
       r <= (min(H, W) - 1) // 2;
    3. concatenation -> 1x1 conv to 3K channels + ReLU -> 1x1 conv to 6K channels +
       sigmoid -> 1x1 conv to K channels (with biases).

    Args:
      spatial_rank: int, K, the number of combining weights per position.
      output_size: tuple of 2 ints, (H_out, W_out) of the logits.
      kernel_initializer: initializer of the convolution kernels.
      bias_initializer: initializer of the convolution biases.
      kernel_regularizer: optional regularizer of the convolution kernels.
      kernel_constraint: optional constraint of the convolution kernels.
      **kwargs: base `Layer` arguments.

    Input shape:
      (batch, H, W, C_in), channels_last, with H and W known at build time.

    Output shape:
      (batch, H_out, W_out, K): unnormalised logits.
    """

    def __init__(
        self,
        spatial_rank,
        output_size,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        kernel_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.spatial_rank = positive_int("spatial_rank", spatial_rank)
        self.output_size = standardize_pair("output_size", output_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def _dense_weights(self, name, fan_in, fan_out):
        kernel = self.add_weight(
            name=f"{name}_kernel",
            shape=(fan_in, fan_out),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        bias = self.add_weight(
            name=f"{name}_bias", shape=(fan_out,), initializer=self.bias_initializer
        )
        return kernel, bias

    def build(self, input_shape):
        _, height, width, channels = channels_last_shape(
            input_shape, "channels_last", type(self).__name__
        )
        if height is None or width is None:
            raise ValueError(
                "Input-dependent combining weights need the input height and width "
                f"at build time. Received input_shape={tuple(input_shape)}"
            )
        rank = self.spatial_rank
        self.dilations = tuple(
            r for r in INPUT_DEPENDENT_DILATIONS if r <= (min(height, width) - 1) // 2
        )
        self.input_size = (height, width)
        self.projection = self._dense_weights("projection", channels, rank)
        self.depthwise = []
        for r in self.dilations:
            kernel = self.add_weight(
                name=f"depthwise_d{r}_kernel",
                shape=(3, 3, rank, 1),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            bias = self.add_weight(
                name=f"depthwise_d{r}_bias",
                shape=(rank,),
                initializer=self.bias_initializer,
            )
            self.depthwise.append((kernel, bias))
        # Hidden widths assume all four dilations (reference behaviour).
        full_width = (2 + len(INPUT_DEPENDENT_DILATIONS)) * rank
        concat_width = (2 + len(self.dilations)) * rank
        self.hidden1 = self._dense_weights("hidden1", concat_width, full_width // 2)
        self.hidden2 = self._dense_weights("hidden2", full_width // 2, full_width)
        self.logits = self._dense_weights("logits", full_width, rank)

    def _resize(self, x):
        """Bilinear, corner-aligned resize of (B, h, w, K) to `output_size`.

        Two matrix products that need no transpose: (o, h) @ (B, h, w * K) for
        the rows, then (p, w) @ (B * o, w, K) for the columns. (`einsum` transposed
        its operands and took 1.5-3x as long.)
        """
        in_height, in_width, channels = x.shape[1:]
        out_height, out_width = self.output_size
        if in_height != out_height:
            rows = ops.cast(align_corners_resize_matrix(in_height, out_height), x.dtype)
            x = ops.matmul(rows, ops.reshape(x, (-1, in_height, in_width * channels)))
            x = ops.reshape(x, (-1, out_height, in_width, channels))
        if in_width != out_width:
            cols = ops.cast(align_corners_resize_matrix(in_width, out_width), x.dtype)
            x = ops.matmul(cols, ops.reshape(x, (-1, in_width, channels)))
            x = ops.reshape(x, (-1, out_height, out_width, channels))
        return x

    def call(self, inputs):
        def dense(x, kernel, bias=None):
            # A 2-D product: `matmul` of a 4-D tensor goes through tensordot.
            flat = ops.matmul(ops.reshape(x, (-1, x.shape[-1])), kernel)
            if bias is not None:
                flat = flat + bias
            return ops.reshape(flat, (*ops.shape(x)[:-1], kernel.shape[-1]))

        rank = self.spatial_rank
        z = dense(inputs, *self.projection)
        branches = [self._resize(z)]
        # XLA's grouped convolution is slow on CPU (its filter gradient above
        # all: 2-3x the whole network's cost in graph mode); under XLA the
        # depthwise convolutions run as dense ones with a block-diagonal kernel,
        # which compute the same sums (the off-diagonal terms are exact zeros).
        block_diagonal = compiling_with_xla()
        for r, (kernel, _) in zip(self.dilations, self.depthwise):
            if block_diagonal:
                dense_kernel = kernel * ops.eye(rank, dtype=kernel.dtype)
                branch = ops.conv(z, dense_kernel, padding="valid", dilation_rate=r)
            else:
                branch = ops.depthwise_conv(z, kernel, padding="valid", dilation_rate=r)
            branches.append(self._resize(branch))
        # The first dense layer sees [z, mean(z), depthwise branches + their
        # biases]. Terms constant over positions are moved past the (linear) dense
        # layer and added once as a (B, 1, 1, 3K) tensor: the mean branch, and the
        # depthwise biases (bilinear resizing maps a constant to itself).
        kernel, bias = self.hidden1
        mean_term = ops.matmul(ops.mean(z, (1, 2), True), kernel[rank : 2 * rank])
        for index, (_, depthwise_bias) in enumerate(self.depthwise):
            rows = kernel[(2 + index) * rank : (3 + index) * rank]
            bias = bias + ops.matmul(depthwise_bias[None, :], rows)[0]
        spatial_kernel = ops.concatenate([kernel[:rank], kernel[2 * rank :]], axis=0)
        hidden = dense(ops.concatenate(branches, axis=-1), spatial_kernel)
        hidden = ops.relu(hidden + (mean_term + bias))
        hidden = ops.sigmoid(dense(hidden, *self.hidden2))
        return dense(hidden, *self.logits)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, self.spatial_rank)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "spatial_rank": self.spatial_rank,
                "output_size": self.output_size,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
            }
        )
        return config

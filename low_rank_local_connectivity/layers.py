"""Low-rank locally connected layers for Keras 3.

A low-rank locally connected (LRLC) layer (Elsayed et al., "Revisiting Spatial
Invariance with Low-Rank Local Connectivity", ICML 2020) learns `spatial_rank` = K
ordinary convolution filter banks W_1..W_K and, at every output position (i, j),
a convex (or otherwise normalised) combination of them:

    y[b, i, j, :] = sum_k a[i, j, k] * (W_k * x)[b, i, j, :] + s[i, j] + c[:]

With K = 1 it is a convolution; with K = H_out * W_out and an unshared table of
combining weights it can express any locally connected layer. The K bases are
evaluated as ONE convolution with K * F output channels and then combined, so the
cost is that of `Conv2D(K * F)` plus a cheap weighted sum; per-position kernels are
never materialised in `call` (see `locally_connected_kernel` for inspection).

This module also provides the pieces the paper's experiments need:
`InputDependentCombiningWeights` (the small network that predicts a per example),
`LocallyConnected2D` (Keras 3 dropped it) and `CoordinateChannels` (CoordConv).
"""

import math

import keras
import numpy as np
from keras import ops

from low_rank_local_connectivity.validation import invalid_argument
from low_rank_local_connectivity.validation import is_int
from low_rank_local_connectivity.validation import positive_int
from low_rank_local_connectivity.validation import standardize_pair

_PACKAGE = "low_rank_local_connectivity"
NORMALIZATIONS = ("", "softmax", "norm")
PADDINGS = ("valid", "same")
DATA_FORMATS = ("channels_last", "channels_first")
CONV_INIT = "conv_init"
# Dilations of the 3x3 depthwise branches of the input-dependent network.
INPUT_DEPENDENT_DILATIONS = (1, 2, 4, 8)
_L2_EPSILON = 1e-12


# ----------------------------------------------------------------------------
# Argument normalisation and validation.
# ----------------------------------------------------------------------------


def _pairs_per_basis(name, value, rank):
    """A Python list gives one size per basis; anything else is shared by all.

    Returns:
      A tuple of `rank` pairs for a list, else None.
    """
    if not isinstance(value, list):
        return None
    if len(value) != rank:
        raise ValueError(
            f"Invalid value for argument `{name}`. A list gives one value per "
            f"basis, so its length must equal spatial_rank={rank} (use a tuple "
            f"(height, width) for a single rectangular value). "
            f"Received: {name}={value!r}"
        )
    return tuple(standardize_pair(f"{name}[{k}]", v) for k, v in enumerate(value))


def _choice(name, value, choices):
    normalised = value.lower() if isinstance(value, str) else value
    if normalised not in choices:
        raise invalid_argument(name, value, f"one of {choices}")
    return normalised


def _data_format(value):
    if value is None:
        value = keras.config.image_data_format()
    return _choice("data_format", value, DATA_FORMATS)


def conv_output_length(size, kernel_size, stride, dilation, padding):
    """Output length of a convolution along one axis (None when size is None).

    Returns a value < 1 when the input is too small for a 'valid' convolution.
    """
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    effective_kernel = (kernel_size - 1) * dilation + 1
    return -(-(size - effective_kernel + 1) // stride)


def normalize_combining_weights(logits, normalization):
    """Normalises combining-weight logits over the last (basis) axis.

    Args:
      logits: tensor (..., K).
      normalization: 'softmax' (sums to 1), 'norm' (unit L2 norm, epsilon 1e-12 on
        the squared norm) or '' (returned unchanged).

    Returns:
      A tensor of the same shape.
    """
    if normalization == "softmax":
        if logits.shape[-1] == 1:
            # Softmax over one basis is exactly 1 (Keras warns on every call).
            # exp(l - l) keeps the logits in the graph, with their zero gradient,
            # so optimizers see a gradient for every trainable variable.
            return ops.exp(logits - logits)
        return ops.softmax(logits, axis=-1)
    if normalization == "norm":
        squared = ops.sum(ops.square(logits), axis=-1, keepdims=True)
        return logits * ops.rsqrt(ops.maximum(squared, _L2_EPSILON))
    if normalization == "":
        return logits
    raise invalid_argument("normalize_weights", normalization, f"one of {NORMALIZATIONS}")


def align_corners_resize_matrix(input_size, output_size):
    """Bilinear interpolation matrix with corner alignment, shape (out, in).

    `matrix @ signal` resizes a 1-D signal so that the first and last input samples
    map exactly to the first and last output samples (TF1's `align_corners=True`).
    Applied along height and width it gives bilinear image resizing.
    """
    matrix = np.zeros((output_size, input_size), np.float32)
    if output_size == 1 or input_size == 1:
        matrix[:, 0] = 1.0
        return matrix
    source = np.arange(output_size) * (input_size - 1) / (output_size - 1)
    low = np.minimum(np.floor(source).astype(int), input_size - 1)
    high = np.minimum(low + 1, input_size - 1)
    fraction = (source - low).astype(np.float32)
    rows = np.arange(output_size)
    np.add.at(matrix, (rows, low), 1.0 - fraction)
    np.add.at(matrix, (rows, high), fraction)
    return matrix


def combine_bases(weights, bases):
    """Weighted sum of basis outputs over the basis axis.

    `outputs[..., f] = sum_k weights[..., k] * bases[..., k, f]`, evaluated as one
    batched (1 x K) @ (K x F) product over all B * H * W positions. Its gradient is
    written by hand: autodiff of a broadcasting batched product runs two more batched
    products of tiny matrices and a strided reduction, which together cost about as
    much as the K-basis convolution's own backward pass on CPU. Here the basis
    gradient is one broadcasting multiply and the weight gradient one batched
    (K x F) @ (F x 1) product followed by a sum over the broadcast axes.

    Args:
      weights: combining weights broadcastable to (B, H, W, K): (B, H, W, K) when
        they depend on the input, (H, W, K), (H, 1, K) or (1, W, K) when fixed.
      bases: (B, H, W, K, F) outputs of the K bases.

    Returns:
      (B, H, W, F), in the dtype of `bases`.
    """
    bases = ops.convert_to_tensor(bases)
    weights = ops.cast(ops.convert_to_tensor(weights), bases.dtype)
    if len(bases.shape) != 5 or len(weights.shape) > 4 or (
        weights.shape[-1] not in (bases.shape[-2], None)
    ):
        raise ValueError(
            "`combine_bases` expects bases (B, H, W, K, F) and weights broadcastable "
            f"to (B, H, W, K). Received bases.shape={tuple(bases.shape)}, "
            f"weights.shape={tuple(weights.shape)}"
        )
    return _combine_bases(weights, bases)


@ops.custom_gradient
def _combine_bases(weights, bases):
    shape = ops.shape(bases)  # (B, H, W, K, F)
    rank, filters = bases.shape[-2], bases.shape[-1]
    flat_bases = ops.reshape(bases, (-1, rank, filters))
    flat_weights = ops.reshape(ops.broadcast_to(weights, shape[:-1]), (-1, 1, rank))
    outputs = ops.reshape(ops.matmul(flat_weights, flat_bases), (*shape[:-2], filters))

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        d_bases = ops.expand_dims(weights, -1) * ops.expand_dims(upstream, -2)
        d_weights = ops.matmul(flat_bases, ops.reshape(upstream, (-1, filters, 1)))
        d_weights = ops.reshape(d_weights, shape[:-1])
        # Undo the broadcast of `weights`: leading axes, then its size-1 axes.
        leading = len(d_weights.shape) - len(weights.shape)
        if leading:
            d_weights = ops.sum(d_weights, axis=tuple(range(leading)))
        ones = tuple(i for i, size in enumerate(weights.shape) if size == 1)
        if ones:
            d_weights = ops.sum(d_weights, axis=ones, keepdims=True)
        return d_weights, d_bases

    return outputs, grad


def _place_strided(values, axis, offset, stride, size):
    """Zero tensor of length `size` on `axis` with values[r] at offset + r * stride."""
    count = values.shape[axis]
    if stride > 1 and count > 1:
        values = ops.expand_dims(values, axis + 1)
        pads = [(0, 0)] * len(values.shape)
        pads[axis + 1] = (0, stride - 1)
        values = ops.pad(values, pads)
        shape = [-1 if dim is None else dim for dim in values.shape]
        shape[axis : axis + 2] = [count * stride]
        values = ops.reshape(values, shape)
        index = [slice(None)] * len(shape)
        index[axis] = slice(0, (count - 1) * stride + 1)
        values = values[tuple(index)]
    pads = [(0, 0)] * len(values.shape)
    pads[axis] = (offset, size - offset - (count - 1) * stride - 1)
    return ops.pad(values, pads)


def position_major_patches(x, kernel_size, strides, output_size):
    """Sliding-window patches of a position-major tensor.

    Args:
      x: (H, W, B, C), already padded.
      kernel_size, strides, output_size: pairs of ints; output_size is
        (H_out, W_out) = ((H - kh) // sh + 1, (W - kw) // sw + 1) or less.

    Returns:
      (H_out, W_out, B, kh * kw * C): the kh * kw strided windows of `x`
      concatenated on the channel axis, features ordered (kh, kw, C).

    The gradient is written by hand: TF's gradient of each strided slice
    (`StridedSliceGrad`) ran 7x slower than transposing the upstream gradient to
    (kh * kw, H_out, W_out, B, C) once and summing zero-padded windows.
    """
    (kh, kw), (sh, sw), (out_height, out_width) = kernel_size, strides, output_size
    x = ops.convert_to_tensor(x)
    if len(x.shape) != 4 or any(
        size is None or (out - 1) * stride + kernel > size
        for size, out, stride, kernel in zip(
            x.shape[:2], output_size, strides, kernel_size
        )
    ):
        raise ValueError(
            "`position_major_patches` expects x (H, W, B, C) with known H and W that "
            f"hold output_size={tuple(output_size)} windows of kernel_size="
            f"{tuple(kernel_size)} at strides={tuple(strides)}. Received "
            f"x.shape={tuple(x.shape)}"
        )

    @ops.custom_gradient
    def patches(x):
        height, width, _, channels = x.shape
        windows = [
            x[i : i + (out_height - 1) * sh + 1 : sh, j : j + (out_width - 1) * sw + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ]

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = ops.reshape(upstream, (out_height, out_width, -1, kh * kw, channels))
            upstream = ops.transpose(upstream, (3, 0, 1, 2, 4))
            d_x = None
            for i in range(kh):
                d_row = None
                for j in range(kw):
                    piece = _place_strided(upstream[i * kw + j], 1, j, sw, width)
                    d_row = piece if d_row is None else d_row + piece
                piece = _place_strided(d_row, 0, i, sh, height)
                d_x = piece if d_x is None else d_x + piece
            return d_x

        return ops.concatenate(windows, axis=-1), grad

    return patches(x)


def compiling_with_xla():
    """Whether the computation being traced will be compiled by XLA.

    True under JAX, and under TensorFlow while tracing a `tf.function` with
    `jit_compile=True` (including Keras' `jit_compile`). Used to pick between
    equivalent formulations whose speed differs between XLA and TF's kernels.
    Reads TF's control-flow context through a private module; if that ever
    moves, this answers False and only speed is affected.
    """
    if keras.backend.backend() == "jax":
        return True
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if tf.executing_eagerly():
        return False
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - depends on TF internals
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _to_channels_last(inputs, data_format):
    if data_format == "channels_first":
        return ops.transpose(inputs, (0, 2, 3, 1))
    return inputs


def _from_channels_last(outputs, data_format):
    if data_format == "channels_first":
        return ops.transpose(outputs, (0, 3, 1, 2))
    return outputs


def _channels_last_shape(input_shape, data_format, layer_name):
    """(batch, height, width, channels) of a 4-D input shape; validates rank."""
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


def _output_shape(batch, height, width, filters, data_format):
    if data_format == "channels_first":
        return (batch, filters, height, width)
    return (batch, height, width, filters)


# ----------------------------------------------------------------------------
# Input-dependent combining weights.
# ----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
        _, height, width, channels = _channels_last_shape(
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


# ----------------------------------------------------------------------------
# The LRLC layer.
# ----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LowRankLocallyConnected2D(keras.layers.Layer):
    """2-D low-rank locally connected layer.

    Learns K = `spatial_rank` convolution filter banks (the bases) and combines their
    outputs at every output position (i, j) with weights a[i, j, :] normalised over
    the bases:

        y[b, i, j, :] = sum_k a[i, j, k] * (W_k * x)[b, i, j, :] + s[i, j] + c[:]

    The combining weights are either fixed learned parameters -- factorised as
    r[i, k] + c[j, k] when shared along rows and columns (default), along one axis
    only, or a full (H_out, W_out, K) table -- or, with `input_dependent=True`,
    predicted per example by `InputDependentCombiningWeights`. With the default
    'conv_init' every position starts with equal weights, so a freshly built layer is
    a convolution with kernel mean_k(W_k).

    Args:
      spatial_rank: int, K >= 1, the number of basis filter banks.
      filters: int, F >= 1, the number of output channels.
      kernel_size: int or tuple of 2 ints, the size of every basis; or a LIST of K
        ints/pairs, one per basis (requires padding='same').
      dilations: int or tuple of 2 ints; or a LIST of K values, one per basis
        (requires padding='same').
      strides: int or tuple of 2 ints. Strides > 1 cannot be combined with
        dilations > 1.
      padding: 'valid' or 'same' (case-insensitive).
      data_format: 'channels_last' (B, H, W, C) or 'channels_first' (B, C, H, W);
        None means `keras.config.image_data_format()`.
      activation: activation applied to the output (name or callable).
      use_bias: bool, whether to add a per-channel bias c of shape (F,).
      kernel_initializer: initializer of the bases.
      combining_weights_initializer: 'conv_init' (constant 1/sqrt(K) split evenly
        between the row and column factors) or any Keras initializer.
      bias_initializer: initializer of the channel and spatial biases.
      kernel_regularizer: regularizer of the bases.
      combining_weights_regularizer: regularizer of the fixed combining weights (of
        the kernels of the combining-weights network when `input_dependent`).
      bias_regularizer: regularizer of the channel and spatial biases.
      activity_regularizer: regularizer of the layer output.
      kernel_constraint: constraint of the bases.
      combining_weights_constraint: constraint of the fixed combining weights (of the
        network's kernels when `input_dependent`).
      bias_constraint: constraint of the channel and spatial biases.
      share_row_combining_weights: bool, factorise the weights with a per-row term
        r[i, k] (variable (H_out, K)).
      share_col_combining_weights: bool, factorise the weights with a per-column term
        c[j, k] (variable (W_out, K)). With only one of the two flags the weights vary
        along that axis only, and the other spatial size may be unknown (None).
        With neither, a full (H_out, W_out, K) table is learned.
      normalize_weights: 'softmax' (default), 'norm' (unit L2 norm over k) or ''
        (no normalisation; None is accepted for '').
      use_spatial_bias: bool, whether to add a spatial bias s[i, j] shared over
        channels (factorised like the combining weights; a full map otherwise).
      input_dependent: bool, predict the combining weights from the input. Requires
        both share flags to be False.
      **kwargs: base `Layer` arguments (name, dtype, trainable, ...).

    Input shape:
      channels_last: (batch, H, W, C_in); channels_first: (batch, C_in, H, W).

    Output shape:
      channels_last: (batch, H_out, W_out, F); channels_first: (batch, F, H_out,
      W_out), with H_out, W_out as for a convolution with the same arguments.

    Raises:
      ValueError: for invalid arguments (at construction) and for inputs whose
        channel dimension, or spatial size needed by the chosen parametrisation, is
        unknown or too small for the kernel (at build).

    Example:

    >>> layer = LowRankLocallyConnected2D(spatial_rank=4, filters=64, kernel_size=3)
    >>> layer(np.zeros((2, 32, 32, 3), "float32")).shape
    (2, 30, 30, 64)
    >>> layer.combining_weights.shape
    (30, 30, 4)
    """

    def __init__(
        self,
        spatial_rank,
        filters,
        kernel_size,
        dilations=1,
        strides=(1, 1),
        padding="valid",
        data_format="channels_last",
        activation=None,
        use_bias=True,
        kernel_initializer="he_uniform",
        combining_weights_initializer=CONV_INIT,
        bias_initializer="zeros",
        kernel_regularizer=None,
        combining_weights_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        combining_weights_constraint=None,
        bias_constraint=None,
        share_row_combining_weights=True,
        share_col_combining_weights=True,
        normalize_weights="softmax",
        use_spatial_bias=True,
        input_dependent=False,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.spatial_rank = positive_int("spatial_rank", spatial_rank)
        self.filters = positive_int("filters", filters)
        rank = self.spatial_rank
        per_basis_sizes = _pairs_per_basis("kernel_size", kernel_size, rank)
        per_basis_dilations = _pairs_per_basis("dilations", dilations, rank)
        self.strides = standardize_pair("strides", strides)
        self.padding = _choice("padding", padding, PADDINGS)
        self.data_format = _data_format(data_format)
        self.per_basis = per_basis_sizes is not None or per_basis_dilations is not None
        if self.per_basis:
            if self.padding != "same":
                raise ValueError(
                    "Bases of different kernel sizes or dilations (`kernel_size` or "
                    "`dilations` given as a list) are only aligned with "
                    "padding='same'. Received: "
                    f"padding={padding!r}, kernel_size={kernel_size!r}, "
                    f"dilations={dilations!r}"
                )
            self.kernel_sizes = per_basis_sizes or (
                (standardize_pair("kernel_size", kernel_size),) * rank
            )
            self.dilation_rates = per_basis_dilations or (
                (standardize_pair("dilations", dilations),) * rank
            )
            self.kernel_size = list(self.kernel_sizes)
            self.dilations = list(self.dilation_rates)
        else:
            self.kernel_size = standardize_pair("kernel_size", kernel_size)
            self.dilations = standardize_pair("dilations", dilations)
            self.kernel_sizes = (self.kernel_size,) * rank
            self.dilation_rates = (self.dilations,) * rank
        if max(self.strides) > 1 and max(max(d) for d in self.dilation_rates) > 1:
            raise ValueError(
                "Strides > 1 cannot be combined with dilations > 1. Received: "
                f"strides={strides!r}, dilations={dilations!r}"
            )
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if combining_weights_initializer == CONV_INIT:
            self.combining_weights_initializer = CONV_INIT
        else:
            self.combining_weights_initializer = keras.initializers.get(
                combining_weights_initializer
            )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.combining_weights_regularizer = keras.regularizers.get(
            combining_weights_regularizer
        )
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.combining_weights_constraint = keras.constraints.get(
            combining_weights_constraint
        )
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.share_row_combining_weights = bool(share_row_combining_weights)
        self.share_col_combining_weights = bool(share_col_combining_weights)
        if normalize_weights is None:
            normalize_weights = ""
        self.normalize_weights = _choice(
            "normalize_weights", normalize_weights, NORMALIZATIONS
        )
        self.use_spatial_bias = bool(use_spatial_bias)
        self.input_dependent = bool(input_dependent)
        if self.input_dependent and (
            self.share_row_combining_weights or self.share_col_combining_weights
        ):
            raise ValueError(
                "Input-dependent combining weights are predicted at every position, "
                "so `share_row_combining_weights` and `share_col_combining_weights` "
                "must both be False when input_dependent=True. Received: "
                f"share_row_combining_weights={share_row_combining_weights!r}, "
                f"share_col_combining_weights={share_col_combining_weights!r}"
            )
        self._channel_axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = keras.layers.InputSpec(ndim=4)

    # -- geometry --------------------------------------------------------------

    def _output_spatial_shape(self, height, width):
        """(H_out, W_out) for an input of (height, width); None stays None."""
        kernel_h, kernel_w = self.kernel_sizes[0]
        dilation_h, dilation_w = self.dilation_rates[0]
        stride_h, stride_w = self.strides
        return (
            conv_output_length(height, kernel_h, stride_h, dilation_h, self.padding),
            conv_output_length(width, kernel_w, stride_w, dilation_w, self.padding),
        )

    @property
    def _weights_vary_along_rows(self):
        """Whether the combining weights depend on the row index i."""
        return self.share_row_combining_weights or not self.share_col_combining_weights

    @property
    def _weights_vary_along_cols(self):
        return self.share_col_combining_weights or not self.share_row_combining_weights

    def _check_spatial_size(self, input_shape, height, width):
        out_height, out_width = self._output_spatial_shape(height, width)
        needs = (
            ("height", "row", height, out_height, self._weights_vary_along_rows),
            ("width", "column", width, out_width, self._weights_vary_along_cols),
        )
        for axis, line, size, out_size, needed in needs:
            if size is None and (needed or self.input_dependent):
                raise ValueError(
                    f"`{type(self).__name__}` needs the input {axis} at build time: "
                    f"its combining weights (share_row_combining_weights="
                    f"{self.share_row_combining_weights}, "
                    f"share_col_combining_weights={self.share_col_combining_weights}"
                    f", input_dependent={self.input_dependent}) and spatial bias "
                    f"have one entry per output {line}. Received "
                    f"input_shape={tuple(input_shape)}. Give the model a fixed "
                    "input size, or share the weights along this axis only."
                )
            if out_size is not None and out_size < 1:
                raise ValueError(
                    f"The input {axis} ({size}) is too small for "
                    f"kernel_size={self.kernel_size}, dilations={self.dilations} with "
                    f"padding='{self.padding}': the output would be empty. Received "
                    f"input_shape={tuple(input_shape)}"
                )
        return out_height, out_width

    # -- variables -------------------------------------------------------------

    def build(self, input_shape):
        _, height, width, channels = _channels_last_shape(
            input_shape, self.data_format, type(self).__name__
        )
        out_height, out_width = self._check_spatial_size(input_shape, height, width)
        self.output_size = (out_height, out_width)
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis: channels}
        )
        rank, filters = self.spatial_rank, self.filters

        def basis(name, size, num_filters):
            return self.add_weight(
                name=name,
                shape=(*size, channels, num_filters),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )

        if self.per_basis:
            self.kernel_bases = [
                basis(f"kernel_bases_{k}", size, filters)
                for k, size in enumerate(self.kernel_sizes)
            ]
        else:
            self.kernel_bases = basis("kernel_bases", self.kernel_size, rank * filters)

        self.combining_weights_network = None
        self.combining_weights_row = None
        self.combining_weights_col = None
        self.combining_weights_table = None
        if self.input_dependent:
            self.combining_weights_network = InputDependentCombiningWeights(
                rank,
                (out_height, out_width),
                kernel_regularizer=self.combining_weights_regularizer,
                kernel_constraint=self.combining_weights_constraint,
                dtype=self.dtype_policy,
                name="combining_weights_network",
            )
            self.combining_weights_network.build((None, height, width, channels))
        else:
            if self.combining_weights_initializer == CONV_INIT:
                both = self.share_row_combining_weights and self.share_col_combining_weights
                initializer = keras.initializers.Constant(
                    (0.5 if both else 1.0) / math.sqrt(rank)
                )
            else:
                initializer = self.combining_weights_initializer

            def combining(name, shape):
                return self.add_weight(
                    name=name,
                    shape=shape,
                    initializer=initializer,
                    regularizer=self.combining_weights_regularizer,
                    constraint=self.combining_weights_constraint,
                )

            if self.share_row_combining_weights:
                self.combining_weights_row = combining(
                    "combining_weights_row", (out_height, rank)
                )
            if self.share_col_combining_weights:
                self.combining_weights_col = combining(
                    "combining_weights_col", (out_width, rank)
                )
            if not (self.share_row_combining_weights or self.share_col_combining_weights):
                self.combining_weights_table = combining(
                    "combining_weights", (out_height, out_width, rank)
                )

        self.spatial_bias_row = None
        self.spatial_bias_col = None
        self.spatial_bias = None
        if self.use_spatial_bias:
            factorised = not self.input_dependent

            def spatial_bias(name, shape):
                return self.add_weight(
                    name=name,
                    shape=shape,
                    initializer=self.bias_initializer,
                    regularizer=self.bias_regularizer,
                    constraint=self.bias_constraint,
                )

            if factorised and self.share_row_combining_weights:
                self.spatial_bias_row = spatial_bias(
                    "spatial_bias_row", (out_height, 1, 1)
                )
            if factorised and self.share_col_combining_weights:
                self.spatial_bias_col = spatial_bias(
                    "spatial_bias_col", (1, out_width, 1)
                )
            if not (self.spatial_bias_row is not None or self.spatial_bias_col is not None):
                self.spatial_bias = spatial_bias(
                    "spatial_bias", (out_height, out_width, 1)
                )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    # -- computation -----------------------------------------------------------

    def _fixed_logits(self):
        """Unnormalised fixed logits, broadcastable to (H_out, W_out, K)."""
        if self.combining_weights_table is not None:
            return self.combining_weights_table
        logits = 0.0
        if self.combining_weights_row is not None:
            logits = logits + self.combining_weights_row[:, None, :]
        if self.combining_weights_col is not None:
            logits = logits + self.combining_weights_col[None, :, :]
        return logits

    def _normalized_weights(self, inputs_channels_last):
        """Combining weights broadcastable to (B, H_out, W_out, K)."""
        if self.input_dependent:
            logits = self.combining_weights_network(inputs_channels_last)
        else:
            logits = self._fixed_logits()
        return normalize_combining_weights(logits, self.normalize_weights)

    def _basis_outputs(self, inputs):
        """Outputs of the K bases, (B, H_out, W_out, K, F), channels_last."""
        conv = lambda kernel, dilation: ops.conv(  # noqa: E731
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=dilation,
        )
        if self.per_basis:
            return ops.stack(
                [
                    conv(kernel, dilation)
                    for kernel, dilation in zip(self.kernel_bases, self.dilation_rates)
                ],
                axis=-2,
            )
        outputs = conv(self.kernel_bases, self.dilations)
        shape = ops.shape(outputs)
        return ops.reshape(
            outputs, (-1, shape[1], shape[2], self.spatial_rank, self.filters)
        )

    def _total_bias(self, outputs):
        """All biases summed on their small shapes and broadcast to (H_out, W_out, F).

        One add over the (B, H_out, W_out, F) outputs, whose gradient is a sum over
        the batch axis only, instead of one add (and one strided reduction in the
        backward pass) per bias. The explicit broadcast matters: `keras.ops.add`
        (Keras 3.15, TensorFlow backend) turns an add of a tensor with one
        non-singleton axis into a `bias_add` along whichever axis has that size, so
        e.g. (1, W_out, 1) + (filters,) gives (1, W_out, 1) when W_out == filters,
        and a (H_out, 1, 1) row bias lands on the filters when H_out == filters.
        None without biases.
        """
        biases = [
            bias
            for bias in (
                self.spatial_bias_row, self.spatial_bias_col, self.spatial_bias, self.bias
            )
            if bias is not None
        ]
        if not biases:
            return None
        shape = ops.shape(outputs)[1:]
        total = ops.broadcast_to(biases[0], shape)
        for bias in biases[1:]:
            total = total + ops.broadcast_to(bias, shape)
        return total

    def call(self, inputs):
        inputs = _to_channels_last(inputs, self.data_format)
        outputs = combine_bases(
            self._normalized_weights(inputs), self._basis_outputs(inputs)
        )
        bias = self._total_bias(outputs)
        if bias is not None:
            outputs = outputs + bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return _from_channels_last(outputs, self.data_format)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = _channels_last_shape(
            input_shape, self.data_format, type(self).__name__
        )
        out_height, out_width = self._output_spatial_shape(height, width)
        return _output_shape(batch, out_height, out_width, self.filters, self.data_format)

    # -- inspection ------------------------------------------------------------

    @property
    def combining_weights(self):
        """The normalised fixed combining weights.

        Shape (H_out, W_out, K); (H_out, K) with row-only sharing and (W_out, K) with
        column-only sharing.

        Raises:
          ValueError: in input-dependent mode (use `get_combining_weights(inputs)`)
            or before the layer is built.
        """
        if self.input_dependent:
            raise ValueError(
                "This layer predicts its combining weights from the input "
                "(input_dependent=True); use `get_combining_weights(inputs)`."
            )
        if not self.built:
            raise ValueError("The layer has no combining weights until it is built.")
        weights = normalize_combining_weights(self._fixed_logits(), self.normalize_weights)
        if not self.share_col_combining_weights and self.share_row_combining_weights:
            return weights[:, 0, :]
        if not self.share_row_combining_weights and self.share_col_combining_weights:
            return weights[0]
        return weights

    def get_combining_weights(self, inputs):
        """Normalised combining weights for a batch, (B, H_out, W_out, K).

        Works in every mode; fixed weights are broadcast over the batch.

        Args:
          inputs: a batch in the layer's data format.
        """
        if not self.built:
            self.build(tuple(inputs.shape))
        inputs = _to_channels_last(ops.convert_to_tensor(inputs), self.data_format)
        weights = self._normalized_weights(inputs)
        shape = ops.shape(inputs)
        out_height, out_width = self._output_spatial_shape(shape[1], shape[2])
        return ops.broadcast_to(
            weights, (shape[0], out_height, out_width, self.spatial_rank)
        )

    def locally_connected_kernel(self, inputs=None):
        """The equivalent per-position kernel.

        kernel[i, j, :, :, :, f] = sum_k a[i, j, k] W_k[:, :, :, f]. Together with the
        bias s[i, j] + c[f] it reproduces the layer as a locally connected layer with
        the same kernel size, strides, padding and dilation.

        Args:
          inputs: a batch; required in input-dependent mode or when a spatial size is
            unknown at build time.

        Returns:
          (H_out, W_out, kh, kw, C_in, F); with a leading batch axis in
          input-dependent mode.

        Raises:
          ValueError: for bases of different sizes, or missing `inputs`.
        """
        if self.per_basis:
            raise ValueError(
                "`locally_connected_kernel` needs bases of a single kernel size and "
                f"dilation. Received kernel_size={self.kernel_size}, "
                f"dilations={self.dilations}"
            )
        if inputs is not None:
            weights = self.get_combining_weights(inputs)
            if not self.input_dependent:
                weights = weights[0]
        elif self.input_dependent:
            raise ValueError(
                "`locally_connected_kernel` needs `inputs` when input_dependent=True: "
                "the kernel differs per example."
            )
        elif None in self.output_size:
            raise ValueError(
                "`locally_connected_kernel` needs `inputs` because the output size "
                f"{self.output_size} was not fully known at build time."
            )
        else:
            weights = normalize_combining_weights(
                self._fixed_logits(), self.normalize_weights
            )
            weights = ops.broadcast_to(weights, (*self.output_size, self.spatial_rank))
        kernel = ops.reshape(
            self.kernel_bases, (*self.kernel_size, -1, self.spatial_rank, self.filters)
        )
        return ops.einsum("...hwk,abckf->...hwabcf", weights, kernel)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # get_config writes per-basis values as a list of pairs, so a flat list of
        # ints is a single (height, width) pair that serialisation turned into a list.
        for name in ("kernel_size", "dilations"):
            value = config.get(name)
            if isinstance(value, list) and all(is_int(v) for v in value):
                config[name] = tuple(value)
        return super().from_config(config)

    def get_config(self):
        config = super().get_config()
        serialize_initializer = keras.initializers.serialize
        config.update(
            {
                "spatial_rank": self.spatial_rank,
                "filters": self.filters,
                "kernel_size": (
                    [list(size) for size in self.kernel_sizes]
                    if self.per_basis
                    else self.kernel_size
                ),
                "dilations": (
                    [list(d) for d in self.dilation_rates]
                    if self.per_basis
                    else self.dilations
                ),
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": serialize_initializer(self.kernel_initializer),
                "combining_weights_initializer": (
                    CONV_INIT
                    if self.combining_weights_initializer == CONV_INIT
                    else serialize_initializer(self.combining_weights_initializer)
                ),
                "bias_initializer": serialize_initializer(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "combining_weights_regularizer": keras.regularizers.serialize(
                    self.combining_weights_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "combining_weights_constraint": keras.constraints.serialize(
                    self.combining_weights_constraint
                ),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "share_row_combining_weights": self.share_row_combining_weights,
                "share_col_combining_weights": self.share_col_combining_weights,
                "normalize_weights": self.normalize_weights,
                "use_spatial_bias": self.use_spatial_bias,
                "input_dependent": self.input_dependent,
            }
        )
        return config


# ----------------------------------------------------------------------------
# Baselines: locally connected layer and coordinate channels.
# ----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LocallyConnected2D(keras.layers.Layer):
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
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = positive_int("filters", filters)
        self.kernel_size = standardize_pair("kernel_size", kernel_size)
        self.strides = standardize_pair("strides", strides)
        self.padding = _choice("padding", padding, PADDINGS)
        self.data_format = _data_format(data_format)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._channel_axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _output_spatial_shape(self, height, width):
        return tuple(
            conv_output_length(size, kernel, stride, 1, self.padding)
            for size, kernel, stride in zip((height, width), self.kernel_size, self.strides)
        )

    def build(self, input_shape):
        _, height, width, channels = _channels_last_shape(
            input_shape, self.data_format, type(self).__name__
        )
        out_height, out_width = self._output_spatial_shape(height, width)
        if height is None or width is None or out_height < 1 or out_width < 1:
            raise ValueError(
                f"`{type(self).__name__}` needs a known input height and width that "
                f"fit kernel_size={self.kernel_size} with padding='{self.padding}'. "
                f"Received input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis: channels}
        )
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
        if self.activation is not None:
            outputs = self.activation(outputs)
        return _from_channels_last(outputs, self.data_format)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = _channels_last_shape(
            input_shape, self.data_format, type(self).__name__
        )
        out_height, out_width = self._output_spatial_shape(height, width)
        return _output_shape(batch, out_height, out_width, self.filters, self.data_format)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CoordinateChannels(keras.layers.Layer):
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
        super().__init__(**kwargs)
        self.data_format = _data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        _, height, width, _ = _channels_last_shape(
            input_shape, self.data_format, type(self).__name__
        )
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
        inputs = _to_channels_last(inputs, self.data_format)
        coordinates = ops.cast(self._coordinates, inputs.dtype)
        coordinates = ops.zeros_like(inputs[..., :1]) + coordinates
        outputs = ops.concatenate([inputs, coordinates], axis=-1)
        return _from_channels_last(outputs, self.data_format)

    def compute_output_shape(self, input_shape):
        input_shape = list(input_shape)
        input_shape[-1 if self.data_format == "channels_last" else 1] += 2
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"data_format": self.data_format})
        return config

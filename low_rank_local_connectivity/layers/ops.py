"""The tensor operations of the layers, with their hand-written gradients.

Pure functions of tensors (or of sizes): the normalisation and the weighted sum
of the LRLC combining weights, the position-major patches of
`LocallyConnected2D`, the corner-aligned resize matrix of the input-dependent
network, the output length of a convolution, and whether XLA compiles the
computation being traced.
"""

import keras
import numpy as np
from keras import ops

from low_rank_local_connectivity.validation import invalid_argument

NORMALIZATIONS = ("", "softmax", "norm")
_L2_EPSILON = 1e-12


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
    logits = ops.convert_to_tensor(logits)
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
    (`StridedSliceGrad`) ran 7x slower than splitting the upstream gradient into
    its kh * kw windows on the channel axis and summing them zero-padded. (Split,
    not a transpose to (kh * kw, H_out, W_out, B, C): the transpose took 1.6x as
    long in float32 and 2.6x in bfloat16, whose 5-D transpose is a slow oneDNN
    reorder; both give the same windows, so the sums are bit for bit the same.)
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
        height, width = x.shape[:2]
        windows = [
            x[i : i + (out_height - 1) * sh + 1 : sh, j : j + (out_width - 1) * sw + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ]

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream_windows = ops.split(upstream, kh * kw, axis=-1)
            d_x = None
            for i in range(kh):
                d_row = None
                for j in range(kw):
                    piece = _place_strided(upstream_windows[i * kw + j], 1, j, sw, width)
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

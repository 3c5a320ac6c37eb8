"""Independent NumPy references of the layers (docs/design.md §1), test oracles.

Shares no code with `low_rank_local_connectivity.layers` and imports no backend, so
it is the oracle on every Keras backend: convolutions, locally connected layers
(values and gradients), the corner-aligned bilinear resize, the input-dependent
network and the LRLC layer. The TensorFlow-only oracles (tf_keras'
`LocallyConnected2D`, TF1's `resize_bilinear`) check these in turn.
"""

import keras
import numpy as np


def variables_by_name(layer):
    """{last path component: float64 array} of a layer's variables, any backend."""
    return {
        w.path.split("/")[-1]: keras.ops.convert_to_numpy(w).astype(np.float64)
        for w in layer.weights
    }


def same_padding(x, kernel_size, strides, dilation=(1, 1)):
    """`x` (B, H, W, C) zero-padded as a 'same' convolution pads it."""
    pads = []
    for size, kernel, stride, rate in zip(x.shape[1:3], kernel_size, strides, dilation):
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel - 1) * rate + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), *pads, (0, 0)))


def np_conv(x, kernel, strides=(1, 1), dilation=(1, 1), padding="valid"):
    """Plain NumPy 2-D convolution (cross-correlation), channels_last."""
    _, height, width, _ = x.shape
    kh, kw, _, _ = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        out_h, out_w = -(-height // sh), -(-width // sw)
        x = same_padding(x, (kh, kw), strides, dilation)
    else:
        out_h, out_w = (height - ekh) // sh + 1, (width - ekw) // sw + 1
    y = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]), np.float64)
    for a in range(kh):
        for b in range(kw):
            patch = x[
                :,
                a * dh : a * dh + (out_h - 1) * sh + 1 : sh,
                b * dw : b * dw + (out_w - 1) * sw + 1 : sw,
                :,
            ]
            y += patch @ kernel[a, b]
    return y


def np_normalize(logits, normalization):
    if normalization == "softmax":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    if normalization == "norm":
        return logits / np.sqrt(np.maximum((logits**2).sum(-1, keepdims=True), 1e-12))
    return logits


def np_patches(x, kernel_size, strides):
    """Sliding windows of a (padded) x (B, H, W, C): (B, H', W', kh, kw, C)."""
    (kh, kw), (sh, sw) = kernel_size, strides
    out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    patches = np.zeros((x.shape[0], out_h, out_w, kh, kw, x.shape[3]), x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            patches[:, i, j] = x[:, i * sh : i * sh + kh, j * sw : j * sw + kw]
    return patches


def np_locally_connected(x, kernel, bias=None, strides=(1, 1), padding="valid"):
    """Locally connected layer: kernel (H', W', kh, kw, C, F), bias (H', W', F)."""
    kh, kw = kernel.shape[2:4]
    if padding == "same":
        x = same_padding(x, (kh, kw), strides)
    y = np.einsum("bijpqc,ijpqcf->bijf", np_patches(x, (kh, kw), strides), kernel)
    return y if bias is None else y + bias


def np_locally_connected_gradients(x, kernel, upstream, strides=(1, 1)):
    """Gradients of sum(upstream * np_locally_connected(x, kernel)) ('valid').

    Returns (d_x, d_kernel, d_bias): each window's input gradient is the upstream
    gradient through the kernel of its position, summed where windows overlap.
    """
    kh, kw = kernel.shape[2:4]
    sh, sw = strides
    d_kernel = np.einsum("bijpqc,bijf->ijpqcf", np_patches(x, (kh, kw), strides), upstream)
    d_windows = np.einsum("bijf,ijpqcf->bijpqc", upstream, kernel)
    d_x = np.zeros_like(x)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            d_x[:, i * sh : i * sh + kh, j * sw : j * sw + kw] += d_windows[:, i, j]
    return d_x, d_kernel, upstream.sum(0)


def np_resize_align_corners(x, size):
    """Bilinear resize of x (B, H, W, C) to `size` with corners aligned (TF1's).

    Output pixel (o, p) samples the input at (o (H - 1) / (O - 1), p (W - 1) /
    (P - 1)) (at 0 when O or P is 1) and interpolates its four neighbours.
    """
    def sources(in_size, out_size):
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        position = np.arange(out_size) * scale
        low = np.clip(np.floor(position).astype(int), 0, in_size - 1)
        return low, np.minimum(low + 1, in_size - 1), position - low

    (top, bottom, dy), (left, right, dx) = (
        sources(n, m) for n, m in zip(x.shape[1:3], size)
    )
    dy, dx = dy[None, :, None, None], dx[None, None, :, None]
    rows_top, rows_bottom = x[:, top], x[:, bottom]
    upper = rows_top[:, :, left] * (1 - dx) + rows_top[:, :, right] * dx
    lower = rows_bottom[:, :, left] * (1 - dx) + rows_bottom[:, :, right] * dx
    return upper * (1 - dy) + lower * dy


def np_input_dependent_logits(x, network, out_size):
    """NumPy version of the combining-weights network of docs/design.md §1."""
    v = variables_by_name(network)
    z = x @ v["projection_kernel"] + v["projection_bias"]
    branches = [np_resize_align_corners(z, out_size)]
    branches.append(np.broadcast_to(z.mean((1, 2), keepdims=True), branches[0].shape))
    height, width = x.shape[1:3]
    for r in (1, 2, 4, 8):
        if r > (min(height, width) - 1) // 2:
            continue
        kernel = v[f"depthwise_d{r}_kernel"][..., 0]  # (3, 3, K)
        out_h, out_w = height - 2 * r, width - 2 * r
        d = sum(
            z[:, a * r : a * r + out_h, b * r : b * r + out_w, :] * kernel[a, b]
            for a in range(3)
            for b in range(3)
        )
        branches.append(np_resize_align_corners(d + v[f"depthwise_d{r}_bias"], out_size))
    h = np.concatenate(branches, -1) @ v["hidden1_kernel"] + v["hidden1_bias"]
    h = 1 / (1 + np.exp(-(np.maximum(h, 0) @ v["hidden2_kernel"] + v["hidden2_bias"])))
    return h @ v["logits_kernel"] + v["logits_bias"]


def np_lrlc(layer, x):
    """NumPy reference of docs/design.md §1 for a built layer (channels_last x)."""
    variables = variables_by_name(layer)
    rank, filters = layer.spatial_rank, layer.filters
    if layer.per_basis:
        kernels = [variables[f"kernel_bases_{k}"] for k in range(rank)]
    else:
        full = variables["kernel_bases"]
        kernels = [full[..., k * filters : (k + 1) * filters] for k in range(rank)]
    bases = [
        np_conv(x, kernel, layer.strides, dilation, layer.padding)
        for kernel, dilation in zip(kernels, layer.dilation_rates)
    ]
    out_size = bases[0].shape[1:3]
    if layer.input_dependent:
        logits = np_input_dependent_logits(x, layer.combining_weights_network, out_size)
    elif "combining_weights" in variables:
        logits = variables["combining_weights"]
    else:
        logits = np.zeros((*out_size, rank))
        if "combining_weights_row" in variables:
            logits = logits + variables["combining_weights_row"][:, None, :]
        if "combining_weights_col" in variables:
            logits = logits + variables["combining_weights_col"][None, :, :]
    weights = np_normalize(logits, layer.normalize_weights)
    y = sum(weights[..., k : k + 1] * bases[k] for k in range(rank))
    for name in ("spatial_bias_row", "spatial_bias_col", "spatial_bias", "bias"):
        if name in variables:
            y = y + variables[name]
    return y

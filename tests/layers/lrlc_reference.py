"""Independent NumPy reference of docs/design.md §1, used as a test oracle.

Shares no code with `low_rank_local_connectivity.layers`; only TF1's
`resize_bilinear(align_corners=True)` is borrowed from TensorFlow.
"""

import numpy as np
import tensorflow as tf


def np_conv(x, kernel, strides=(1, 1), dilation=(1, 1), padding="valid"):
    """Plain NumPy 2-D convolution (cross-correlation), channels_last."""
    _, height, width, _ = x.shape
    kh, kw, _, _ = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        out_h, out_w = -(-height // sh), -(-width // sw)
        pad_h = max((out_h - 1) * sh + ekh - height, 0)
        pad_w = max((out_w - 1) * sw + ekw - width, 0)
        x = np.pad(
            x,
            ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
        )
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


def np_resize_align_corners(x, size):
    return tf.compat.v1.image.resize_bilinear(x, size, align_corners=True).numpy()


def np_input_dependent_logits(x, network, out_size):
    """NumPy version of the combining-weights network of docs/design.md §1.

    TF1's align-corners resize is the oracle of the resize.
    """
    v = {w.path.split("/")[-1]: np.asarray(w, np.float64) for w in network.weights}
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
    variables = {w.path.split("/")[-1]: np.asarray(w, np.float64) for w in layer.weights}
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

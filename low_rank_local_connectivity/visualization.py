"""Heat maps of the combining weights of LRLC layers.

For an LRLC layer of rank K the combining weights a[i, j, k] say how much basis
k contributes at output position (i, j). `plot_combining_weights` draws one heat
map per basis on a shared colour scale; for input-dependent layers it draws one
row per example image, the image first. `visualize_model_dir` does this for
every LRLC layer of a model trained by `trainer` and writes one PNG per layer.

Example:

>>> model, config, _, _ = run_dir.load_model("runs/mnist_lrlc")  # doctest: +SKIP
>>> images = example_images(config, num_images=4)             # doctest: +SKIP
>>> for layer in lrlc_layers(model):                           # doctest: +SKIP
...     weights = combining_weights(model, layer, images)
...     plot_combining_weights(weights, f"{layer.name}.png", images=images)
"""

import os

import keras
import numpy as np

from low_rank_local_connectivity import data
from low_rank_local_connectivity import layers as lrlc_layers_lib
from low_rank_local_connectivity.training import run_dir


def lrlc_layers(model):
    """The `LowRankLocallyConnected2D` layers of a model, nested ones included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, lrlc_layers_lib.LowRankLocallyConnected2D)
    ]


def combining_weights(model, layer, images):
    """Normalised combining weights of an LRLC layer of a functional model.

    Args:
        model: functional `keras.Model` containing `layer` (called once).
        layer: a `LowRankLocallyConnected2D` layer of `model`.
        images: float array (B, H, W, C), inputs of `model`; they determine the
            weights of an input-dependent layer (a fixed layer ignores their
            values but B >= 1 is required).

    Returns:
        float64 array: (K, H_out, W_out) for fixed combining weights,
        (B, K, H_out, W_out) for input-dependent ones.

    Raises:
        TypeError: if `layer` is not an LRLC layer.
        ValueError: if `images` is not a non-empty batch.
    """
    if not isinstance(layer, lrlc_layers_lib.LowRankLocallyConnected2D):
        raise TypeError(
            "Invalid type for argument `layer`. Expected a "
            "LowRankLocallyConnected2D layer. Received: "
            f"{type(layer).__name__}"
        )
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(
            "Invalid value for argument `images`. Expected a non-empty batch "
            f"(B, H, W, C). Received shape: {images.shape}"
        )
    inputs = keras.Model(model.input, layer.input)(images)
    weights = keras.ops.convert_to_numpy(layer.get_combining_weights(inputs))
    weights = np.moveaxis(weights.astype(np.float64), -1, 1)  # (B, K, H, W)
    return weights if layer.input_dependent else weights[0]


def plot_combining_weights(weights, path, *, images=None, title=None):
    """Saves heat maps of combining weights as a PNG (one colour scale).

    Args:
        weights: (K, H, W) fixed weights (one row of K maps), or (B, K, H, W)
            input-dependent weights (one row per example).
        path: str, the PNG to write.
        images: optional (B, H_img, W_img, C) images drawn at the start of each
            row of input-dependent weights (grey for C = 1).
        title: optional str, figure title.

    Returns:
        `path`.

    Raises:
        ValueError: for weights that are not 3-D or 4-D, or images whose batch
            size differs from the weights'.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    weights = np.asarray(weights, np.float64)
    if weights.ndim == 3:
        weights = weights[None]
        images = None
    elif weights.ndim != 4:
        raise ValueError(
            "Invalid value for argument `weights`. Expected shape (K, H, W) or "
            f"(B, K, H, W). Received shape: {weights.shape}"
        )
    if images is not None:
        images = np.asarray(images, np.float64)
        if images.ndim != 4 or images.shape[0] != weights.shape[0]:
            raise ValueError(
                "Invalid value for argument `images`. Expected (B, H, W, C) with "
                f"B = {weights.shape[0]} (the weights' batch). Received shape: "
                f"{images.shape}"
            )
    rows, rank = weights.shape[:2]
    columns = rank + (images is not None)
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.9 * columns + 0.8, 1.9 * rows + 0.6),
        squeeze=False,
    )
    low, high = weights.min(), weights.max()
    if high <= low:
        low, high = low - 0.5, high + 0.5
    mappable = None
    for row in range(rows):
        offset = 0
        if images is not None:
            image = images[row]
            span = image.max() - image.min()
            image = (image - image.min()) / span if span > 0 else image * 0
            axes[row, 0].imshow(
                image[..., 0] if image.shape[-1] == 1 else image, cmap="gray"
            )
            axes[row, 0].set_title("input" if row == 0 else "", fontsize=8)
            offset = 1
        for k in range(rank):
            axis = axes[row, offset + k]
            mappable = axis.imshow(
                weights[row, k], vmin=low, vmax=high, cmap="viridis"
            )
            if row == 0:
                axis.set_title(f"basis {k + 1}", fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def example_images(config, num_images=4, split="test"):
    """The first `num_images` preprocessed images of a split of a run's data.

    Args:
        config: experiment config (its `dataset` section is used).
        num_images: int >= 1.
        split: 'train', 'valid' or 'test' (evaluation pipeline, fixed order).

    Returns:
        float32 array (num_images, H, W, C).
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(
            "Invalid value for argument `num_images`. Expected a positive "
            f"integer. Received: {num_images!r}"
        )
    batches = data.resolve_config(config.dataset).make_dataset(
        split, batch_size=num_images, is_training=False, seed=config.get("seed"),
    )
    images, _, _ = next(iter(batches))
    return images.numpy()


def visualize_model_dir(model_dir, output_dir, *, num_images=4, which="best",
                        data_dir=None):
    """Writes one combining-weight PNG per LRLC layer of a trained model.

    Args:
        model_dir: str, a trainer model_dir.
        output_dir: str, where the PNGs go (`<layer name>.png`).
        num_images: int, example test images for input-dependent layers.
        which: 'best' or 'latest' checkpoint.
        data_dir: optional str, TFDS data_dir (default: the run's).

    Returns:
        List of the PNG paths written (empty when the model has no LRLC layer).
    """
    model, config, _, _ = run_dir.load_model(model_dir, which)
    if data_dir is not None:
        config.dataset.data_dir = data_dir
    layers = lrlc_layers(model)
    if not layers:
        return []
    images = example_images(config, num_images)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for layer in layers:
        weights = combining_weights(model, layer, images)
        mode = "input-dependent" if layer.input_dependent else "fixed"
        paths.append(plot_combining_weights(
            weights, os.path.join(output_dir, f"{layer.name}.png"),
            images=images if layer.input_dependent else None,
            title=(
                f"{layer.name}: {mode} combining weights, rank "
                f"{layer.spatial_rank} ({config.dataset.name})"
            ),
        ))
    return paths

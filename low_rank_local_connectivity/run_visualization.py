"""Combining-weight figures of a trained run (`visualize_model_dir`).

It opens a run (`training.open_run`), takes example images of its data and
draws every LRLC layer's combining weights with `visualization`.
"""

import os

from low_rank_local_connectivity import data
from low_rank_local_connectivity import training
from low_rank_local_connectivity import visualization


def example_images(config, num_images=4, split="test"):
    """The first `num_images` preprocessed images of a split of a run's data.

    Args:
        config: experiment config (its `dataset` section is used).
        num_images: int >= 1.
        split: 'train', 'valid' or 'test' (evaluation pipeline, fixed order).

    Returns:
        float32 array (num_images, H, W, C): from the NumPy pipeline for a
        dataset held in memory, else from the tf.data one.
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(
            "Invalid value for argument `num_images`. Expected a positive "
            f"integer. Received: {num_images!r}"
        )
    dataset = data.resolve_config(config.dataset)
    options = dict(batch_size=num_images, is_training=False, seed=config.get("seed"))
    if dataset.in_memory:  # The NumPy path: the same images, without TensorFlow.
        images, _, _ = next(dataset.numpy_batches(split, **options))
        return images
    images, _, _ = next(iter(dataset.make_dataset(split, **options)))
    return images.numpy()


def visualize_model_dir(model_dir, output_dir, *, num_images=4, checkpoint="best",
                        data_dir=None):
    """Writes one combining-weight PNG per LRLC layer of a trained model.

    Args:
        model_dir: str, a trainer model_dir.
        output_dir: str, where the PNGs go (`<layer name>.png`).
        num_images: int, example test images for input-dependent layers.
        checkpoint: 'best', 'latest' or a checkpoint prefix.
        data_dir: optional str, TFDS data_dir (default: the run's).

    Returns:
        List of the PNG paths written (empty when the model has no LRLC layer).
    """
    run = training.open_run(model_dir)
    model, _, _ = run.load_model(checkpoint)
    config = run.config
    if data_dir is not None:
        config.dataset.data_dir = data_dir
    layers = visualization.lrlc_layers(model)
    if not layers:
        return []
    images = example_images(config, num_images)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for layer in layers:
        weights = visualization.combining_weights(model, layer, images)
        mode = "input-dependent" if layer.input_dependent else "fixed"
        paths.append(visualization.plot_combining_weights(
            weights, os.path.join(output_dir, f"{layer.name}.png"),
            images=images if layer.input_dependent else None,
            title=(
                f"{layer.name}: {mode} combining weights, rank "
                f"{layer.spatial_rank} ({config.dataset.name})"
            ),
        ))
    return paths

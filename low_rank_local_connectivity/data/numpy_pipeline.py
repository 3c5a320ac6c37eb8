"""NumPy batches of an in-memory dataset, positioned by arithmetic.

The batches are those of the tf.data pipeline, (image float32 (b, H, W, C),
label int32 (b,), mask float32 (b,)), made with NumPy alone (no TensorFlow):

- Evaluation: one pass over the split in its order; the last batch is padded
  to full size with zero images, label 0 and mask 0.
- Training: infinite; epoch e is the permutation
  `default_rng([seed, 0, split, e]).permutation(N)` of the split, cut into
  N // batch_size batches (the remainder of every epoch is dropped).
- Sharding (`shard_index` of `num_shards`, e.g. one shard per JAX process):
  `batch_size` is GLOBAL; shard k yields the k-th of `num_shards` equal
  slices of each global batch, so together the shards yield the batches of
  one unsharded iterator, and every shard yields as many batches.
- Random preprocessing (the translation canvas) of the element at global
  stream position p uses `default_rng([seed, 1, split, p])`: it depends on
  the seed and the position only.

The position of step s is computed (epoch, batch in the epoch), never
replayed, so an iterator started at `start_step=s` yields exactly what an
uninterrupted one yields from step s on.

The canvas has the placement and noise distribution of the TF pipeline's
`preprocessing.translate_to_canvas` (offsets uniform in {0, ..., N-h-1},
noise lo + (hi - lo) * U[0, 1)), drawn from NumPy's generators: the same
distribution, not the same bits as TF's stateless RNG. Scaling is bit-exact
with the TF pipeline.

Why not Grain: grain (0.2.18 on PyPI) installs, does not import TensorFlow,
and its random-access `MapDataset.shuffle` / `IndexSampler` follow this very
design. Two details do not fit: it seeds epoch e's shuffle with `seed + e`
and element i's generator with `Philox(seed + i)`, so seed s + 1 replays in
its first epoch the order that seed s sees in its second (the experiment
grid trains seeds 0, 1, 2 as independent replicates); and for data that fit
in memory it adds about 0.7 s of imports, five dependencies and a logged
warning when JAX is absent, for what is here one permutation per epoch and
a `divmod`. `SeedSequence` hashes its whole key, so nearby seeds, epochs and
positions give unrelated streams. A dataset too large for memory would take
a Grain source with the same position arithmetic.
"""

import itertools

import numpy as np

from low_rank_local_connectivity.data import names

_ORDER_STREAM = 0
_ELEMENT_STREAM = 1


def scale(images, value_range):
    """uint8 pixels -> float32 in `value_range`, as `preprocessing.scale`."""
    low, high = value_range
    return np.float32(low) + np.float32(high - low) * (
        images.astype(np.float32) / np.float32(255.0)
    )


def translate_to_canvas(image, canvas_size, rng, value_range=(0.0, 1.0)):
    """Places an image at a random offset inside a noise-filled square canvas.

    The NumPy twin of `preprocessing.translate_to_canvas`: the same placement
    (top-left corner at N - h - o_y, N - w - o_x with o_y, o_x uniform in
    {0, ..., N-h-1}, {0, ..., N-w-1}) and noise (lo + (hi - lo) * U[0, 1)), drawn
    from `rng` instead of TF's stateless RNG.

    Args:
        image: float32 array (h, w, C), already scaled to `value_range`.
        canvas_size: int N > max(h, w).
        rng: `np.random.Generator`.
        value_range: (lo, hi) pixel range of `image`.

    Returns:
        float32 array (N, N, C).
    """
    height, width, channels = image.shape
    if canvas_size <= max(height, width):
        raise ValueError(
            "Invalid value for argument `canvas_size`. Expected an int larger than "
            f"the image's height and width {(height, width)}. "
            f"Received: {canvas_size!r}"
        )
    top = canvas_size - height - rng.integers(0, canvas_size - height)
    left = canvas_size - width - rng.integers(0, canvas_size - width)
    low, high = value_range
    canvas = np.float32(low) + np.float32(high - low) * rng.random(
        (canvas_size, canvas_size, channels), dtype=np.float32
    )
    canvas[top : top + height, left : left + width] = image
    return canvas


def check_supported(spec, name):
    """Raises a `ValueError` for preprocessing that only the TF path has."""
    if spec.image_size is not None:
        raise ValueError(
            f"Invalid value for argument `image_size`. Expected None: the NumPy "
            f"path of dataset {name!r} does not resize (store the images at their "
            f"final size). Received: {spec.image_size!r}"
        )


def _preprocess(images, spec, seed, split_id, positions):
    """uint8 (b, h, w, C) -> float32 (b, H, W, C); `positions` seed the canvas."""
    images = scale(images, spec.value_range)
    if spec.translate_to is None:
        return images
    side = spec.translate_to
    canvases = np.empty((len(images), side, side, images.shape[-1]), np.float32)
    for i, (image, position) in enumerate(zip(images, positions)):
        rng = np.random.default_rng([seed, _ELEMENT_STREAM, split_id, int(position)])
        canvases[i] = translate_to_canvas(image, side, rng, spec.value_range)
    return canvases


def _check_args(batch_size, is_training, seed, start_step, shard_index, num_shards,
                num_examples):
    names.check_positive_int(batch_size, "batch_size")
    names.check_positive_int(num_shards, "num_shards")
    if not isinstance(is_training, bool):
        raise TypeError(
            f"Invalid type for argument `is_training`. Expected bool. Received: "
            f"{is_training!r}"
        )
    for argument, value in (("start_step", start_step), ("shard_index", shard_index),
                            ("seed", 0 if seed is None else seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or value < 0:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected a non-negative "
                f"integer{' or None' if argument == 'seed' else ''}. "
                f"Received: {argument}={value!r}"
            )
    if shard_index >= num_shards or batch_size % num_shards:
        raise ValueError(
            "Invalid value for argument `shard_index`. Expected 0 <= shard_index < "
            f"num_shards, and num_shards dividing batch_size. Received: "
            f"shard_index={shard_index}, num_shards={num_shards}, "
            f"batch_size={batch_size}"
        )
    if is_training and batch_size > num_examples:
        raise ValueError(
            "Invalid value for argument `batch_size`. Expected at most the "
            f"{num_examples} examples of the split for training. "
            f"Received: batch_size={batch_size}"
        )


def batches(images, labels, spec, split, image_shape, *, batch_size, is_training,
            seed, start_step=0, shard_index=0, num_shards=1):
    """Iterator of NumPy (image, label, mask) batches (see the module docstring).

    Args:
        images: uint8 array (N, h, w, C), the split in its order.
        labels: int array (N,).
        spec: the dataset's `names.Spec` (no resize, crop or ImageNet).
        split: str, one of `names.SPLITS` (part of the random streams' keys).
        image_shape: (H, W, C) after preprocessing.
        batch_size: int, GLOBAL batch size (a multiple of `num_shards`).
        is_training: bool.
        seed: optional non-negative int; None draws a fresh one.
        start_step: int, the first batch yielded is that of this step.
        shard_index, num_shards: ints, this shard of the global batches.

    Returns:
        A generator of (float32 (b, H, W, C), int32 (b,), float32 (b,)),
        b = batch_size // num_shards; infinite when training.
    """
    num_examples = len(labels)
    _check_args(batch_size, is_training, seed, start_step, shard_index, num_shards,
                num_examples)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
    split_id = names.SPLITS.index(split)
    per_shard = batch_size // num_shards
    offsets = shard_index * per_shard + np.arange(per_shard)
    labels = labels.astype(np.int32)

    def training():
        steps_per_epoch = num_examples // batch_size
        epoch, order = None, None
        for step in itertools.count(start_step):
            step_epoch, batch_in_epoch = divmod(step, steps_per_epoch)
            if step_epoch != epoch:
                epoch = step_epoch
                order = np.random.default_rng(
                    [seed, _ORDER_STREAM, split_id, epoch]
                ).permutation(num_examples)
            index = order[batch_in_epoch * batch_size + offsets]
            yield (
                _preprocess(images[index], spec, seed, split_id,
                            step * batch_size + offsets),
                labels[index],
                np.ones(per_shard, np.float32),
            )

    def evaluation():
        num_batches = -(-num_examples // batch_size)
        for step in range(start_step, num_batches):
            positions = step * batch_size + offsets
            index = positions[positions < num_examples]
            real = _preprocess(images[index], spec, seed, split_id, index)
            batch_images = np.zeros((per_shard, *image_shape), np.float32)
            batch_images[: len(index)] = real
            batch_labels = np.zeros(per_shard, np.int32)
            batch_labels[: len(index)] = labels[index]
            yield batch_images, batch_labels, (positions < num_examples).astype(
                np.float32
            )

    return training() if is_training else evaluation()


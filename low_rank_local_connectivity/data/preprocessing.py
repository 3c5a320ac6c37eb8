"""Preprocessing in TensorFlow ops: scaling, translation canvas, ImageNet.

One set of functions serves the tf.data pipelines (training and evaluation)
and the exported SavedModel (`serving_preprocess`). The NumPy path
(`numpy_pipeline`) implements the same scaling and canvas. This module
imports TensorFlow; the package imports it only for the TF paths.
"""

import tensorflow as tf

from low_rank_local_connectivity.data import names


def scale(images, value_range):
    """Maps uint8 pixels (or floats in [0, 255]) linearly onto `value_range`."""
    low, high = value_range
    return low + (high - low) * (tf.cast(images, tf.float32) / 255.0)


def translate_to_canvas(image, canvas_size, seed, value_range=(0.0, 1.0)):
    """Places an image at a random offset inside a noise-filled square canvas.

    The one translation mechanism of the package ('trans_celeba48',
    'trans_mnist42', `translate_to=N`). As in the reference (pad the image centred
    to (2N - h) and take a random N×N crop at offsets 0..N-h-1), the image's top-left
    corner lands at row N - h - o_y and column N - w - o_x with o_y, o_x uniform in
    {0, ..., N-h-1} and {0, ..., N-w-1}: the image always lies fully inside the
    canvas. Every canvas pixel outside the image is independent uniform noise
    lo + (hi - lo) * U[0, 1): Uniform[0, 1) in the [0, 1] pixel convention,
    mapped to the preprocessed `value_range` like the pixels are, so it is
    Uniform[0, 1) for CelebA and Uniform[-1, 1) for MNIST in [-1, 1].

    Args:
        image: float32 tensor (h, w, C) with static h, w, already preprocessed to
            `value_range`.
        canvas_size: int N > max(h, w).
        seed: int tensor of shape (2,), the stateless seed of offsets and noise.
        value_range: (lo, hi) pixel range of `image`.

    Returns:
        float32 tensor (N, N, C).

    Raises:
        ValueError: if the canvas is not larger than the image.
    """
    height, width = image.shape[0], image.shape[1]
    if height is None or width is None or canvas_size <= max(height, width):
        raise ValueError(
            "Invalid value for argument `canvas_size`. Expected an int larger than "
            f"the image's static height and width {image.shape[:2]}. "
            f"Received: {canvas_size!r}"
        )
    offset_seed, noise_seed, column_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    offset_y = tf.random.stateless_uniform(
        (), offset_seed, minval=0, maxval=canvas_size - height, dtype=tf.int32
    )
    offset_x = tf.random.stateless_uniform(
        (), column_seed, minval=0, maxval=canvas_size - width, dtype=tf.int32
    )
    top = canvas_size - height - offset_y
    left = canvas_size - width - offset_x
    paddings = [
        [top, canvas_size - height - top],
        [left, canvas_size - width - left],
        [0, 0],
    ]
    placed = tf.pad(image, paddings)
    inside = tf.pad(tf.ones_like(image, dtype=tf.bool), paddings)
    low, high = value_range
    noise = low + (high - low) * tf.random.stateless_uniform(
        tf.shape(placed), noise_seed, dtype=tf.float32
    )
    canvas = tf.where(inside, placed, noise)
    return tf.ensure_shape(canvas, (canvas_size, canvas_size, image.shape[-1]))


def preprocess_small(image, seed, spec):
    """uint8 ([B,] H, W, C) -> float32 preprocessed images (non-ImageNet datasets).

    `seed` is only used for the translation canvas, which needs single images.
    """
    if spec.crop is not None:
        top, left, height, width = spec.crop
        image = image[..., top : top + height, left : left + width, :]
    if spec.image_size is not None:
        image = tf.image.resize(
            tf.cast(image, tf.float32),
            (spec.image_size, spec.image_size),
            method=tf.image.ResizeMethod.BICUBIC,
        )
        image = tf.clip_by_value(image, 0.0, 255.0)
    image = scale(image, spec.value_range)
    if spec.translate_to is not None:
        image = translate_to_canvas(image, spec.translate_to, seed, spec.value_range)
    return image


def _normalize_imagenet(images):
    """Pixels in [0, 255] -> (x / 255 - mean) / stddev, per RGB channel."""
    mean = tf.constant(names.IMAGENET_MEAN_RGB, tf.float32)
    stddev = tf.constant(names.IMAGENET_STDDEV_RGB, tf.float32)
    images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)
    return (images / 255.0 - mean) / stddev


def preprocess_imagenet(encoded, seed, is_training):
    """JPEG bytes -> float32 (224, 224, 3), the standard ResNet preprocessing.

    Training: random crop covering 8%..100% of the area with aspect ratio 3/4..4/3
    (the whole image when no crop is found in 10 attempts), bicubic resize to 224,
    random horizontal flip. Evaluation: centre crop of 224/256 of the shorter side,
    bicubic resize to 224. Both: per-channel mean/stddev normalisation.
    """
    shape = tf.image.extract_jpeg_shape(encoded)
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    if is_training:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
            seed=crop_seed,
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        crop_window = tf.stack([begin[0], begin[1], size[0], size[1]])
    else:
        side = tf.cast(
            names.IMAGENET_EVAL_CROP_FRACTION
            * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32),
            tf.int32,
        )
        side = tf.maximum(side, 1)
        crop_window = tf.stack(
            [(shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, side, side]
        )
    image = tf.image.decode_and_crop_jpeg(encoded, crop_window, channels=3)
    image = tf.image.resize(
        image,
        (names.IMAGENET_IMAGE_SIZE, names.IMAGENET_IMAGE_SIZE),
        method=tf.image.ResizeMethod.BICUBIC,
    )
    if is_training:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return _normalize_imagenet(image)


def serving_preprocess(spec, images_uint8):
    """Maps uint8 images at the preprocessed shape to the model's input scaling.

    Graph-safe TF ops with a dynamic batch, for an exported SavedModel: the
    caller provides images that already have the dataset's `image_shape` (e.g.
    224×224 crops for 'imagenet2012', 48×48 canvases for 'trans_celeba48');
    this applies the same pixel scaling as the training/evaluation pipeline.

    Args:
        spec: the dataset's `names.Spec`.
        images_uint8: uint8 tensor (B, H, W, C).

    Returns:
        float32 tensor (B, H, W, C).

    Raises:
        TypeError: if `images_uint8` is not uint8.
    """
    images = tf.convert_to_tensor(images_uint8)
    if images.dtype != tf.uint8:
        raise TypeError(
            "Invalid dtype for argument `images_uint8`. Expected uint8. "
            f"Received: {images.dtype.name}"
        )
    if spec.imagenet:
        return _normalize_imagenet(images)
    return scale(images, spec.value_range)

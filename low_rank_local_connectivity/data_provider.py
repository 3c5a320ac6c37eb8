"""Input pipelines: the paper's datasets, any TFDS image classifier, 'mnist_small'.

Every dataset is served through one interface:

- `make_dataset(name, split, ...)` returns a `tf.data.Dataset` of
  `(image, label, mask)` batches: image float32 (b, H, W, C) channels_last, label
  int32 (b,), mask float32 (b,) that is 1 for real examples and 0 for the padding
  that fills the last evaluation batch.
- `get_metadata(name, ...)` returns a `DatasetMetadata` (classes, split sizes, image
  shape and pixel range after preprocessing).
- `preprocess_serving_images(name, images)` maps uint8 images that already have the
  preprocessed shape to the model's input scaling, inside an exported SavedModel.

Dataset names (docs/design.md §4):

- 'mnist': TFDS mnist; train = train[8%:], valid = train[:8%], test = test; pixels
  in [-1, 1].
- 'mnist_small': a fixed, class-balanced subset of real MNIST embedded in the package
  (5,000 / 1,000 / 1,000 images from MNIST train[8%:] / train[:8%] / test, made by
  `scripts/make_mnist_small.py`, sha256 `MNIST_SMALL_SHA256`; MNIST by Yann LeCun
  and Corinna Cortes, CC BY-SA 3.0); same preprocessing as 'mnist'; never touches
  TFDS or the network.
- 'cifar10': train = train[10%:], valid = train[:10%], test = test; pixels in [0, 1].
- 'celeba32': TFDS celeb_a, label = attribute 'Male' (classes Female, Male), official
  splits, crop rows [40, 178) and cols [20, 158), bicubic resize to 32×32, pixels in
  [0, 1].
- 'trans_celeba48': 'celeba32' placed at a random offset in a noise-filled 48×48
  canvas (see `translate_to_canvas`).
- 'imagenet2012': ResNet preprocessing at 224×224 (random-resized crop and flip for
  training, centre crop for evaluation), per-channel mean/stddev normalisation;
  train = train, valid = test = validation (ImageNet's test labels are not public).
- 'trans_<name><N>', e.g. 'trans_mnist42': dataset <name> (any of the above but
  'imagenet2012', or a TFDS name) translated into an N×N noise-filled canvas; the
  `translate_to=N` option does the same for any name.
- Any other TFDS image-classification dataset by its TFDS name (features 'image' and
  'label'): train / valid = 'train' / 'validation', or train[8%:] / train[:8%] when
  the dataset has no validation split (or uses it as its test split); test = 'test'
  (else 'validation'). Pixels in [0, 1] unless `value_range` says otherwise; resized
  to `image_size`×`image_size` when given.

Missing TFDS data fails fast with `DataNotFoundError`, before TFDS can start its
minutes-long download retries: the prepared files are looked up in `data_dir` first,
and TFDS is asked to download only when `download=True` and the download hosts
answer (`downloads.unreachable_host`), or to prepare from `manual_dir` only when
every original file is present there. A failed download leaves no partial files.
"""

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import pathlib
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from low_rank_local_connectivity import downloads

SPLITS = ("train", "valid", "test")

DATASET_NAMES = (
    "mnist",
    "mnist_small",
    "cifar10",
    "celeba32",
    "trans_celeba48",
    "imagenet2012",
)

MNIST_SMALL_PATH = pathlib.Path(__file__).resolve().parent / "data" / "mnist_small.npz"
MNIST_SMALL_SHA256 = "edb56ebb4364eb1b5794d06cc20167484e1d3cc631f96593aec99041e4a6628b"
MNIST_SMALL_NUM_EXAMPLES = {"train": 5000, "valid": 1000, "test": 1000}
_MNIST_SHAPE = (28, 28, 1)

IMAGENET_IMAGE_SIZE = 224
# Evaluation: centre crop of 224/256 of the shorter side (= resize to 256, crop 224).
IMAGENET_EVAL_CROP_FRACTION = 224 / 256
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

# Share of 'train' held out as 'valid' for TFDS datasets without a validation split.
DEFAULT_HOLDOUT_PERCENT = 8

_TRANSLATE_PREFIX = "trans_"


class DataNotFoundError(FileNotFoundError):
    """The dataset is not prepared in `data_dir` and may not or could not be fetched.

    The message names the options as arguments of `make_dataset`
    (`download=True`); `named_for(prefix)` returns the same error with them
    named for another interface, e.g. '--config.dataset.' for scripts/train.py.
    `render(prefix)` gives the message for a prefix; it is kept as the text it
    renders for a placeholder prefix, so that the error pickles (it crosses
    process boundaries).
    """

    _PREFIX_PLACEHOLDER = "\0option-prefix\0"

    def __init__(self, message, render=None):
        super().__init__(message)
        self._template = None if render is None else render(self._PREFIX_PLACEHOLDER)

    def named_for(self, prefix):
        """This error with its options named `<prefix><option>`."""
        if self._template is None:
            return self
        error = DataNotFoundError(self._template.replace(self._PREFIX_PLACEHOLDER, prefix))
        error._template = self._template
        return error


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """What a model and a trainer need to know about a dataset.

    Attributes:
        name: str, the dataset name given to `get_metadata`, e.g. 'trans_mnist42'.
        num_classes: int, number of classes.
        class_names: tuple of str, the name of every class id.
        num_examples: dict, number of real examples of 'train', 'valid' and 'test'.
        image_shape: tuple (H, W, C) of the images after preprocessing,
            channels_last.
        value_range: tuple (lo, hi), the pixel range after preprocessing.
    """

    name: str
    num_classes: int
    class_names: tuple
    num_examples: dict
    image_shape: tuple
    value_range: tuple


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How one dataset is read and preprocessed (internal).

    Attributes:
        tfds_name: TFDS name, or None for the embedded 'mnist_small'.
        splits: dict our split -> TFDS split, or None to derive it from the
            builder's splits.
        label_path: keys leading from a TFDS example to the label.
        class_names: class names, or None to take the label feature's names.
        crop: (top, left, height, width) cropped before resizing, or None.
        image_size: side of the square resize, or None for no resize.
        value_range: (lo, hi) to which uint8 [0, 255] pixels are mapped linearly.
        translate_to: side of the noise-filled canvas, or None.
        imagenet: True for the ResNet ImageNet preprocessing.
    """

    tfds_name: Optional[str]
    splits: Optional[dict] = None
    label_path: tuple = ("label",)
    class_names: Optional[tuple] = None
    crop: Optional[tuple] = None
    image_size: Optional[int] = None
    value_range: tuple = (0.0, 1.0)
    translate_to: Optional[int] = None
    imagenet: bool = False


def _percent_splits(percent):
    return {
        "train": f"train[{percent}%:]",
        "valid": f"train[:{percent}%]",
        "test": "test",
    }


_BUILTIN_SPECS = {
    "mnist": _Spec("mnist", splits=_percent_splits(8), value_range=(-1.0, 1.0)),
    "mnist_small": _Spec(None, value_range=(-1.0, 1.0)),
    "cifar10": _Spec("cifar10", splits=_percent_splits(10)),
    "celeba32": _Spec(
        "celeb_a",
        splits={"train": "train", "valid": "validation", "test": "test"},
        label_path=("attributes", "Male"),
        class_names=("Female", "Male"),
        crop=(40, 20, 138, 138),
        image_size=32,
    ),
    "imagenet2012": _Spec(
        "imagenet2012",
        splits={"train": "train", "valid": "validation", "test": "validation"},
        imagenet=True,
    ),
}
_BUILTIN_SPECS["trans_celeba48"] = dataclasses.replace(
    _BUILTIN_SPECS["celeba32"], translate_to=48
)

_MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))


# ----------------------------------------------------------------------------
# Name and argument resolution.
# ----------------------------------------------------------------------------


def _tfds_base_name(name):
    """'celeb_a/align:2.1.0' -> 'celeb_a'."""
    return name.split("/")[0].split(":")[0]


def _is_tfds_name(name):
    # Community datasets ('namespace:name') are not supported; listing them
    # would refresh their index over the network.
    return _tfds_base_name(name) in tfds.list_builders(with_community_datasets=False)


def _unknown_name_error(name):
    return ValueError(
        f"Invalid value for argument `name`. Received: {name!r}. Expected one of "
        f"{DATASET_NAMES}, '{_TRANSLATE_PREFIX}<name><N>' (e.g. 'trans_mnist42'), "
        "or the name of a TFDS image-classification dataset (features 'image' and "
        "'label'; see `tfds.list_builders()`)."
    )


def _base_spec(name):
    """Returns the `_Spec` of a name without a 'trans_' prefix."""
    if name in _BUILTIN_SPECS:
        return _BUILTIN_SPECS[name]
    if _is_tfds_name(name):
        return _Spec(name)
    raise _unknown_name_error(name)


def _parse_translated_name(name):
    """'trans_mnist42' -> ('mnist', 42); None when `name` has no such form.

    The longest known dataset name wins, so 'trans_cifar10048' is cifar100 at 48.
    """
    rest = name[len(_TRANSLATE_PREFIX):]
    for cut in range(len(rest) - 1, 0, -1):
        base, size = rest[:cut], rest[cut:]
        if not size.isdigit() or size.startswith("0"):
            continue
        if base in _BUILTIN_SPECS or _is_tfds_name(base):
            return base, int(size)
    return None


def _check_positive_int(value, argument, allow_none=False):
    if value is None and allow_none:
        return
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value <= 0:
        expected = "None or a positive integer" if allow_none else "a positive integer"
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected {expected}. "
            f"Received: {value!r}"
        )


def _resolve_spec(name, translate_to=None, image_size=None, value_range=None):
    """Returns the `_Spec` for a dataset name and the user's options.

    Args:
        name: str, dataset name (see the module docstring).
        translate_to: optional int, side of the noise-filled canvas.
        image_size: optional int, resize images to image_size×image_size.
        value_range: optional (lo, hi), pixel range after preprocessing.

    Returns:
        A `_Spec`.

    Raises:
        TypeError: if `name` is not a string.
        ValueError: for unknown names or invalid options.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"Invalid type for argument `name`. Expected str. Received: {name!r} "
            f"of type {type(name).__name__}"
        )
    _check_positive_int(translate_to, "translate_to", allow_none=True)
    _check_positive_int(image_size, "image_size", allow_none=True)
    if value_range is not None:
        if (
            not isinstance(value_range, (tuple, list))
            or len(value_range) != 2
            or not all(isinstance(v, (int, float)) for v in value_range)
            or not value_range[0] < value_range[1]
        ):
            raise ValueError(
                "Invalid value for argument `value_range`. Expected None or a pair "
                f"(lo, hi) of numbers with lo < hi. Received: {value_range!r}"
            )
        value_range = (float(value_range[0]), float(value_range[1]))

    if name in _BUILTIN_SPECS:
        spec = _BUILTIN_SPECS[name]
    elif name.startswith(_TRANSLATE_PREFIX):
        parsed = _parse_translated_name(name)
        if parsed is None:
            raise _unknown_name_error(name)
        spec = dataclasses.replace(_base_spec(parsed[0]), translate_to=parsed[1])
    else:
        spec = _base_spec(name)

    overrides = {
        "translate_to": translate_to,
        "image_size": image_size,
        "value_range": value_range,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if spec.imagenet and overrides:
        raise ValueError(
            f"Dataset {name!r} uses the fixed ResNet preprocessing; the options "
            f"{sorted(overrides)} are not supported for it. Received: {overrides}"
        )
    return dataclasses.replace(spec, **overrides)


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(
            f"Invalid value for argument `split`. Expected one of {SPLITS}. "
            f"Received: {split!r}"
        )


# ----------------------------------------------------------------------------
# TFDS access that fails fast.
# ----------------------------------------------------------------------------


def _original_file_names(builder):
    """File names TFDS expects to find in a manual_dir (or to download)."""
    names = []
    for url, url_info in (builder.url_infos or {}).items():
        filename = url_info.filename if url_info is not None else None
        names.append(filename or url.rstrip("/").rsplit("/", 1)[-1])
    return sorted(set(names))


def _ways_to_provide(builder, option):
    """How to provide a TFDS dataset, options named `<option><name>`."""
    files = _original_file_names(builder)
    lines = [
        "Provide it in one of three ways:",
        f"  1. {option}download=True (needs internet): TFDS downloads and "
        "prepares it into the data_dir.",
        f"  2. {option}data_dir=<folder>: a prepared TFDS data_dir containing "
        f"{builder.name}/{builder.version}/ (e.g. made by `tfds build "
        f"{builder.name}` on a machine with internet and copied over); the "
        "TFDS_DATA_DIR environment variable sets the default.",
        f"  3. {option}manual_dir=<folder>: a folder with the original files"
        + (f" ({', '.join(files)})" if files else "")
        + "; TFDS prepares them into the data_dir without network.",
    ]
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        lines.append(
            "TFDS instructions for the original files: "
            + " ".join(str(builder.MANUAL_DOWNLOAD_INSTRUCTIONS).split())
        )
    lines.append(
        "The embedded dataset 'mnist_small' (experiment presets mnist_small_*) "
        "needs no download."
    )
    return lines


def _data_error(builder, problem):
    """A `DataNotFoundError`: `problem(option_prefix)`, then the ways out."""

    def render(option):
        return "\n".join([problem(option), *_ways_to_provide(builder, option)])

    return DataNotFoundError(render(""), render)


_DOWNLOAD_ERRORS = (OSError, tfds.download.DownloadError)


def _prepared_builder(tfds_name, name, data_dir, download, manual_dir):
    """Returns a TFDS builder whose data is prepared, or fails fast.

    With `download`, the download hosts must answer within seconds (TFDS
    would retry for minutes); a download that fails anyway has its partial
    files removed from the data_dir.

    Args:
        tfds_name: str, TFDS name (optionally with config and version).
        name: str, our dataset name (for messages).
        data_dir: optional str, TFDS data_dir.
        download: bool, allow TFDS to download and prepare the dataset.
        manual_dir: optional str, folder with the original files.

    Returns:
        A `tfds.core.DatasetBuilder` whose data exists in its data_dir.

    Raises:
        DataNotFoundError: if the data is not prepared, `download` is False and
            `manual_dir` does not hold every original file; or if the download
            hosts do not answer, or downloading or preparing fails.
    """
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    about = f"Dataset {name!r} (TFDS {builder.name!r}, version {builder.version})"
    root = str(builder.data_dir_root)
    if not download:
        missing = []
        if manual_dir is not None:
            manual_path = pathlib.Path(manual_dir).expanduser()
            missing = [
                filename
                for filename in _original_file_names(builder)
                if not (manual_path / filename).exists()
            ]
            if not manual_path.is_dir():
                missing = ["(folder)"]
        if manual_dir is None or missing:

            def problem(option):
                text = (
                    f"{about} is not prepared in data_dir {root!r} (searched "
                    f"{str(builder.data_dir)!r}), and {option}download is False."
                )
                if missing:
                    text += (
                        f" {option}manual_dir {str(manual_dir)!r} lacks the "
                        f"original files: {', '.join(missing)}."
                    )
                return text

            raise _data_error(builder, problem)
    else:
        unreachable = downloads.unreachable_host(builder.url_infos or {})
        if unreachable is not None:
            raise _data_error(builder, lambda option: (
                f"{about} cannot be downloaded: {unreachable[0]} does not answer "
                f"({unreachable[1]}). Nothing was written to data_dir {root!r}."
            ))
    cleanup = (
        contextlib.nullcontext() if "://" in root
        else downloads.removed_on_failure(root, (builder.name, "downloads"))
    )
    try:
        with cleanup:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
    except _DOWNLOAD_ERRORS as error:
        cause = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        raise _data_error(builder, lambda option: (
            f"{about} could not be downloaded and prepared into data_dir "
            f"{root!r} ({cause}); its partial files were removed."
        )) from error
    return builder


def _complete_spec(spec, info, name):
    """Fills the TFDS-dependent parts of `spec` from the builder's info.

    Checks that the dataset is an image classifier (an 'image' feature and a
    class-label feature at `spec.label_path`) and derives the splits of generic
    datasets.

    Args:
        spec: a `_Spec` with a `tfds_name`.
        info: the builder's `tfds.core.DatasetInfo`.
        name: our dataset name (for messages).

    Returns:
        A `_Spec` whose `splits` and `class_names` are set.

    Raises:
        ValueError: if the dataset lacks the features or splits needed.
    """
    features = info.features
    label_feature = features
    try:
        for key in spec.label_path:
            label_feature = label_feature[key]
        image_feature = features["image"]
    except KeyError:
        raise ValueError(
            f"Dataset {name!r} (TFDS {spec.tfds_name!r}) is not an image "
            f"classification dataset: it needs the features 'image' and "
            f"{'/'.join(spec.label_path)!r}. Its features are {list(features.keys())}."
        ) from None
    if spec.class_names is None and not isinstance(
        label_feature, tfds.features.ClassLabel
    ):
        raise ValueError(
            f"Dataset {name!r}: feature {'/'.join(spec.label_path)!r} is not a "
            f"ClassLabel. Received: {label_feature!r}"
        )
    if len(image_feature.shape) != 3:
        raise ValueError(
            f"Dataset {name!r}: expected an image feature of shape (H, W, C). "
            f"Received: {image_feature.shape}"
        )
    updates = {}
    if spec.class_names is None:
        updates["class_names"] = tuple(label_feature.names)
    if spec.splits is None:
        available = sorted(info.splits.keys())
        if "train" not in available or not {"test", "validation"} & set(available):
            raise ValueError(
                f"Dataset {name!r}: needs a 'train' split and a 'test' or "
                f"'validation' split. Available splits: {available}"
            )
        test = "test" if "test" in available else "validation"
        if "validation" in available and test != "validation":
            updates["splits"] = {"train": "train", "valid": "validation", "test": test}
        else:
            updates["splits"] = dict(
                _percent_splits(DEFAULT_HOLDOUT_PERCENT), test=test
            )
    return dataclasses.replace(spec, **updates)


def _source_image_shape(spec, info):
    """(H, W, C) of a TFDS example's image, None for unknown dims."""
    if spec.tfds_name is None:
        return _MNIST_SHAPE
    return tuple(info.features["image"].shape)


def _image_shape(spec, source_shape, name):
    """(H, W, C) after preprocessing; validates that it is fully known."""
    if spec.imagenet:
        return (IMAGENET_IMAGE_SIZE, IMAGENET_IMAGE_SIZE, 3)
    height, width, channels = source_shape
    if spec.crop is not None:
        height, width = spec.crop[2], spec.crop[3]
    if spec.image_size is not None:
        height = width = spec.image_size
    if height is None or width is None or channels is None:
        raise ValueError(
            f"Dataset {name!r} has images of varying size {source_shape}; pass "
            "`image_size` to resize them to a fixed square size."
        )
    if spec.translate_to is not None:
        if spec.translate_to <= max(height, width):
            raise ValueError(
                "Invalid value for argument `translate_to`. Expected a canvas larger "
                f"than the images ({height}×{width}) of dataset {name!r}. "
                f"Received: {spec.translate_to}"
            )
        height = width = spec.translate_to
    return (height, width, channels)


def _value_range(spec):
    if spec.imagenet:
        lows = [-m / s for m, s in zip(IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB)]
        highs = [(1 - m) / s for m, s in zip(IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB)]
        return (float(min(lows)), float(max(highs)))
    return spec.value_range


# ----------------------------------------------------------------------------
# The embedded dataset.
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist_small_arrays():
    data = MNIST_SMALL_PATH.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != MNIST_SMALL_SHA256:
        raise OSError(
            f"{MNIST_SMALL_PATH} is corrupted: sha256 {digest}, expected "
            f"{MNIST_SMALL_SHA256}. Reinstall the package or rebuild the file with "
            "scripts/make_mnist_small.py."
        )
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        cached = {key: arrays[key] for key in arrays.files}
    for array in cached.values():
        array.flags.writeable = False  # Shared by every caller.
    return cached


def load_mnist_small(split):
    """Returns the raw embedded 'mnist_small' split as NumPy arrays.

    Args:
        split: str, one of 'train', 'valid', 'test'.

    Returns:
        (images, labels): uint8 (N, 28, 28, 1) and int64 (N,), N = 5000 for
        'train', 1000 for 'valid' and 'test'.

    Raises:
        ValueError: for an unknown split.
        OSError: if the embedded file does not match its recorded sha256.
    """
    _check_split(split)
    arrays = _mnist_small_arrays()
    images = arrays[f"{split}_images"][..., np.newaxis]
    labels = arrays[f"{split}_labels"].astype(np.int64)
    return images, labels


# ----------------------------------------------------------------------------
# Preprocessing.
# ----------------------------------------------------------------------------


def _scale(images, value_range):
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


def _preprocess_small(image, seed, spec):
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
    image = _scale(image, spec.value_range)
    if spec.translate_to is not None:
        image = translate_to_canvas(image, spec.translate_to, seed, spec.value_range)
    return image


def _normalize_imagenet(images):
    """Pixels in [0, 255] -> (x / 255 - mean) / stddev, per RGB channel."""
    mean = tf.constant(IMAGENET_MEAN_RGB, tf.float32)
    stddev = tf.constant(IMAGENET_STDDEV_RGB, tf.float32)
    images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)
    return (images / 255.0 - mean) / stddev


def _preprocess_imagenet(encoded, seed, is_training):
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
            IMAGENET_EVAL_CROP_FRACTION
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
        (IMAGENET_IMAGE_SIZE, IMAGENET_IMAGE_SIZE),
        method=tf.image.ResizeMethod.BICUBIC,
    )
    if is_training:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return _normalize_imagenet(image)


def preprocess_serving_images(
    name, images_uint8, *, translate_to=None, image_size=None, value_range=None
):
    """Maps uint8 images at the preprocessed shape to the model's input scaling.

    For use inside an exported SavedModel (graph-safe TF ops, dynamic batch): the
    caller provides images that already have the dataset's `image_shape` (e.g.
    224×224 crops for 'imagenet2012', 48×48 canvases for 'trans_celeba48'); this
    applies the same pixel scaling as the training/evaluation pipeline.

    Args:
        name: str, dataset name (as for `make_dataset`).
        images_uint8: uint8 tensor (B, H, W, C).
        translate_to: optional int, as for `make_dataset` (does not change the
            scaling).
        image_size: optional int, as for `make_dataset`.
        value_range: optional (lo, hi), as for `make_dataset`.

    Returns:
        float32 tensor (B, H, W, C).

    Raises:
        TypeError: if `images_uint8` is not uint8.
        ValueError: for an unknown dataset name or invalid options.
    """
    spec = _resolve_spec(name, translate_to, image_size, value_range)
    images = tf.convert_to_tensor(images_uint8)
    if images.dtype != tf.uint8:
        raise TypeError(
            "Invalid dtype for argument `images_uint8`. Expected uint8. "
            f"Received: {images.dtype.name}"
        )
    if spec.imagenet:
        return _normalize_imagenet(images)
    return _scale(images, spec.value_range)


# ----------------------------------------------------------------------------
# Public entry points.
# ----------------------------------------------------------------------------


def _check_loading_args(data_dir, download, manual_dir):
    if not isinstance(download, bool):
        raise TypeError(
            f"Invalid type for argument `download`. Expected bool. Received: "
            f"{download!r}"
        )
    for argument, value in (("data_dir", data_dir), ("manual_dir", manual_dir)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(
                f"Invalid type for argument `{argument}`. Expected None, str or a "
                f"path. Received: {value!r}"
            )


def get_metadata(
    name,
    *,
    data_dir=None,
    download=False,
    manual_dir=None,
    translate_to=None,
    image_size=None,
    value_range=None,
):
    """Returns the `DatasetMetadata` of a dataset.

    Args:
        name: str, dataset name (see the module docstring).
        data_dir: optional str, TFDS data_dir (default: TFDS's own, or
            `TFDS_DATA_DIR`).
        download: bool, let TFDS download and prepare missing data.
        manual_dir: optional str, folder with the dataset's original files.
        translate_to: optional int, place images in a noise-filled canvas of this
            side.
        image_size: optional int, resize images to image_size×image_size.
        value_range: optional (lo, hi), pixel range after preprocessing.

    Returns:
        A `DatasetMetadata`.

    Raises:
        DataNotFoundError: if the data is missing and may not, or could not,
            be downloaded.
        TypeError, ValueError: for invalid arguments or unknown names.
    """
    spec = _resolve_spec(name, translate_to, image_size, value_range)
    _check_loading_args(data_dir, download, manual_dir)
    if spec.tfds_name is None:
        return DatasetMetadata(
            name=name,
            num_classes=len(_MNIST_CLASS_NAMES),
            class_names=_MNIST_CLASS_NAMES,
            num_examples=dict(MNIST_SMALL_NUM_EXAMPLES),
            image_shape=_image_shape(spec, _MNIST_SHAPE, name),
            value_range=_value_range(spec),
        )
    builder = _prepared_builder(spec.tfds_name, name, data_dir, download, manual_dir)
    spec = _complete_spec(spec, builder.info, name)
    return DatasetMetadata(
        name=name,
        num_classes=len(spec.class_names),
        class_names=tuple(spec.class_names),
        num_examples={
            split: int(builder.info.splits[spec.splits[split]].num_examples)
            for split in SPLITS
        },
        image_shape=_image_shape(spec, _source_image_shape(spec, builder.info), name),
        value_range=_value_range(spec),
    )


def _records(spec, name, split, is_training, data_dir, download, manual_dir, seed):
    """Dataset of (raw image, int32 label) before any shuffling.

    Returns:
        (dataset, spec, source image shape) — `spec` completed from TFDS.
    """
    if spec.tfds_name is None:
        images, labels = load_mnist_small(split)
        records = tf.data.Dataset.from_tensor_slices(
            (images, labels.astype(np.int32))
        )
        return records, spec, _MNIST_SHAPE

    builder = _prepared_builder(spec.tfds_name, name, data_dir, download, manual_dir)
    spec = _complete_spec(spec, builder.info, name)
    decoders = {"image": tfds.decode.SkipDecoding()} if spec.imagenet else None
    examples = builder.as_dataset(
        split=spec.splits[split],
        shuffle_files=is_training,
        decoders=decoders,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )

    def select(example):
        label = example
        for key in spec.label_path:
            label = label[key]
        return example["image"], tf.cast(label, tf.int32)

    records = examples.map(select, num_parallel_calls=tf.data.AUTOTUNE)
    return records, spec, _source_image_shape(spec, builder.info)


def split_files(builder, tfds_split):
    """Paths of the TFRecord shards that a TFDS (sub-)split reads."""
    names = [
        str(instruction.filename)
        for instruction in builder.info.splits[tfds_split].file_instructions
    ]
    return sorted({
        name if os.path.isabs(name) or "://" in name
        else os.path.join(str(builder.data_dir), name)
        for name in names
    })


def find_unreadable_files(name, split, *, data_dir=None, read_records=True,
                          **options):
    """Shards of a split that are missing or cannot be read through.

    With `read_records`, every record of every shard of the split is read and
    its checksum verified (used to name the culprit after a
    `tf.errors.DataLossError`); otherwise only the files' existence is
    checked (a fast check before training).

    Args:
        name: str, dataset name.
        split: str, one of `SPLITS`.
        data_dir: optional str, TFDS data_dir.
        read_records: bool, read every record (else check existence only).
        **options: `translate_to`, `image_size`, `value_range` of the dataset.

    Returns:
        list of (path, reason) pairs; empty for 'mnist_small' and for
        datasets whose split files are not recorded in their metadata.
    """
    _check_split(split)
    spec = _resolve_spec(
        name, options.get("translate_to"), options.get("image_size"),
        options.get("value_range"),
    )
    if spec.tfds_name is None:
        return []
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    spec = _complete_spec(spec, builder.info, name)
    try:
        paths = split_files(builder, spec.splits[split])
    except (KeyError, ValueError):  # No recorded split files: nothing to check.
        return []
    unreadable = []
    for path in paths:
        if not tf.io.gfile.exists(path):
            unreadable.append((path, "missing file"))
            continue
        if not read_records:
            continue
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.OpError as error:
            reason = str(error).split("}}")[-1].split("[Op:")[0].strip()
            unreadable.append((path, reason))
    return unreadable


def _pad_batch(images, labels, masks, batch_size):
    """Pads a (possibly short) batch to `batch_size` with mask 0."""
    missing = batch_size - tf.shape(labels)[0]
    images = tf.pad(images, [[0, missing]] + [[0, 0]] * (images.shape.rank - 1))
    labels = tf.pad(labels, [[0, missing]])
    masks = tf.pad(masks, [[0, missing]])
    return (
        tf.ensure_shape(images, [batch_size] + images.shape[1:].as_list()),
        tf.ensure_shape(labels, [batch_size]),
        tf.ensure_shape(masks, [batch_size]),
    )


def make_dataset(
    name,
    split,
    *,
    batch_size,
    is_training,
    data_dir=None,
    download=False,
    manual_dir=None,
    seed=None,
    shuffle_buffer_size=10_000,
    input_context=None,
    translate_to=None,
    image_size=None,
    value_range=None,
):
    """Returns the batched input pipeline of one split of a dataset.

    Training (`is_training=True`): files and examples shuffled (buffer
    `shuffle_buffer_size`), repeated forever, batched with drop_remainder,
    prefetched; mask is all ones. Evaluation: one pass in a fixed order; the last
    batch is padded to full size with zero images, label 0 and mask 0, so masked
    metrics count every real example exactly once. Random preprocessing
    (translation canvas, ImageNet crops and flips) uses stateless ops seeded per
    element from `seed`, so a given `seed` reproduces the same stream.

    With a `tf.distribute.InputContext`, the examples are sharded over the input
    pipelines and batched at `input_context.get_per_replica_batch_size(batch_size)`
    (as `strategy.distribute_datasets_from_function` expects).

    Args:
        name: str, dataset name (see the module docstring).
        split: str, one of 'train', 'valid', 'test'.
        batch_size: int, GLOBAL batch size.
        is_training: bool, training or evaluation pipeline.
        data_dir: optional str, TFDS data_dir (default: TFDS's own, or
            `TFDS_DATA_DIR`).
        download: bool, let TFDS download and prepare missing data.
        manual_dir: optional str, folder with the dataset's original files.
        seed: optional int, makes shuffling and random preprocessing
            deterministic.
        shuffle_buffer_size: int, examples in the shuffle buffer (training).
        input_context: optional `tf.distribute.InputContext`.
        translate_to: optional int, place images in a noise-filled canvas of this
            side.
        image_size: optional int, resize images to image_size×image_size.
        value_range: optional (lo, hi), pixel range after preprocessing.

    Returns:
        `tf.data.Dataset` of (image float32 (b, H, W, C), label int32 (b,),
        mask float32 (b,)), b the per-replica batch size.

    Raises:
        DataNotFoundError: if the data is missing and may not, or could not,
            be downloaded.
        TypeError, ValueError: for invalid arguments or unknown names.
    """
    spec = _resolve_spec(name, translate_to, image_size, value_range)
    _check_split(split)
    _check_loading_args(data_dir, download, manual_dir)
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(shuffle_buffer_size, "shuffle_buffer_size")
    if not isinstance(is_training, bool):
        raise TypeError(
            f"Invalid type for argument `is_training`. Expected bool. Received: "
            f"{is_training!r}"
        )
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
    ):
        raise TypeError(
            f"Invalid type for argument `seed`. Expected None or int. Received: "
            f"{seed!r}"
        )

    if input_context is not None:
        per_replica_batch_size = input_context.get_per_replica_batch_size(batch_size)
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
    else:
        per_replica_batch_size, num_pipelines, pipeline_id = batch_size, 1, 0

    records, spec, source_shape = _records(
        spec, name, split, is_training, data_dir, download, manual_dir, seed
    )
    image_shape = _image_shape(spec, source_shape, name)

    if num_pipelines > 1:
        records = records.shard(num_pipelines, pipeline_id)
    if is_training:
        records = records.shuffle(
            shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True
        ).repeat()

    # Per-element stateless seeds: (seed, pipeline) folded with the element index,
    # so input pipelines draw independent random preprocessing.
    if seed is None:
        base_seed = [int(np.random.default_rng().integers(2**31)), pipeline_id]
    else:
        base_seed = [seed, pipeline_id]
    base_seed = tf.constant(base_seed, tf.int64)

    def preprocess(index, record):
        image, label = record
        element_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        if spec.imagenet:
            image = _preprocess_imagenet(image, element_seed, is_training)
        else:
            image = _preprocess_small(image, element_seed, spec)
        image = tf.ensure_shape(image, image_shape)
        return image, label, tf.constant(1.0, tf.float32)

    def preprocess_batch(images, labels):
        images = _preprocess_small(images, None, spec)
        images = tf.ensure_shape(images, (None, *image_shape))
        return images, labels, tf.ones_like(labels, tf.float32)

    if spec.imagenet or spec.translate_to is not None:
        dataset = records.enumerate().map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(per_replica_batch_size, drop_remainder=is_training)
    else:
        # No per-example randomness: one map call per batch instead of one per
        # example (the same values; on 2 cores the per-example calls cost a few
        # percent of a training step).
        dataset = records.batch(per_replica_batch_size, drop_remainder=is_training)
        dataset = dataset.map(preprocess_batch, num_parallel_calls=tf.data.AUTOTUNE)
    if not is_training:
        dataset = dataset.map(
            functools.partial(_pad_batch, batch_size=per_replica_batch_size)
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class DatasetOptions:
    """The `dataset` section of an experiment config as one typed object.

    Every caller that reads a run's data (the trainer, the visualisation) goes
    through it, so the loading and preprocessing options are spelled out once.
    Its methods are `get_metadata`, `make_dataset` and `find_unreadable_files`
    with these options filled in.
    """

    name: str
    data_dir: Optional[str] = None
    download: bool = False
    manual_dir: Optional[str] = None
    translate_to: Optional[int] = None
    image_size: Optional[int] = None
    value_range: Optional[tuple] = None
    shuffle_buffer_size: int = 10_000

    @classmethod
    def from_config(cls, dataset):
        """From a config's `dataset` section (absent fields keep the defaults)."""
        fields = {
            field.name: dataset.get(field.name, field.default)
            for field in dataclasses.fields(cls)
        }
        if fields["value_range"] is not None:
            fields["value_range"] = tuple(fields["value_range"])
        return cls(**fields)

    def _preprocessing(self):
        return dict(translate_to=self.translate_to, image_size=self.image_size,
                    value_range=self.value_range)

    def get_metadata(self):
        """`get_metadata` of this dataset."""
        return get_metadata(
            self.name, data_dir=self.data_dir, download=self.download,
            manual_dir=self.manual_dir, **self._preprocessing(),
        )

    def make_dataset(self, split, **kwargs):
        """`make_dataset` of this dataset; `kwargs`: batch_size, is_training,
        seed, input_context."""
        return make_dataset(
            self.name, split, data_dir=self.data_dir, download=self.download,
            manual_dir=self.manual_dir, shuffle_buffer_size=self.shuffle_buffer_size,
            **self._preprocessing(), **kwargs,
        )

    def find_unreadable_files(self, split, read_records=True):
        """`find_unreadable_files` of a split of this dataset."""
        return find_unreadable_files(
            self.name, split, data_dir=self.data_dir, read_records=read_records,
            **self._preprocessing(),
        )

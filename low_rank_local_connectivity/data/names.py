"""Dataset names and options: how each dataset is read and preprocessed.

`resolve_spec` turns a name and the user's preprocessing options into a
`Spec`, without touching any data. Only a name that is neither built in nor
an `.npz` path is looked up among TFDS's builders (which imports
tensorflow_datasets); everything else here is plain Python.
"""

import dataclasses
import pathlib
from typing import Optional

import numpy as np

SPLITS = ("train", "valid", "test")

DATASET_NAMES = (
    "mnist",
    "mnist_small",
    "cifar10",
    "celeba32",
    "trans_celeba48",
    "imagenet2012",
)

MNIST_SMALL_PATH = pathlib.Path(__file__).resolve().parent / "mnist_small.npz"

IMAGENET_IMAGE_SIZE = 224
# Evaluation: centre crop of 224/256 of the shorter side (= resize to 256, crop 224).
IMAGENET_EVAL_CROP_FRACTION = 224 / 256
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

# Share of 'train' held out as 'valid' for TFDS datasets without a validation split.
DEFAULT_HOLDOUT_PERCENT = 8
MNIST_HOLDOUT_PERCENT = 8

TRANSLATE_PREFIX = "trans_"
NPZ_SUFFIX = ".npz"


@dataclasses.dataclass(frozen=True)
class Spec:
    """How one dataset is read and preprocessed.

    Attributes:
        tfds_name: TFDS name, or None for a dataset of arrays.
        npz_path: path of the `.npz` of a dataset of arrays (the embedded
            'mnist_small' included), or None.
        splits: dict our split -> TFDS split, or None to derive it from the
            builder's splits.
        label_path: keys leading from a TFDS example to the label.
        class_names: class names, or None to take them from the source.
        crop: (top, left, height, width) cropped before resizing, or None.
        image_size: side of the square resize, or None for no resize.
        value_range: (lo, hi) to which uint8 [0, 255] pixels are mapped linearly.
        translate_to: side of the noise-filled canvas, or None.
        imagenet: True for the ResNet ImageNet preprocessing.
    """

    tfds_name: Optional[str]
    npz_path: Optional[str] = None
    splits: Optional[dict] = None
    label_path: tuple = ("label",)
    class_names: Optional[tuple] = None
    crop: Optional[tuple] = None
    image_size: Optional[int] = None
    value_range: tuple = (0.0, 1.0)
    translate_to: Optional[int] = None
    imagenet: bool = False


def percent_splits(percent):
    """Our splits as TFDS splits: valid = the first `percent`% of 'train'."""
    return {
        "train": f"train[{percent}%:]",
        "valid": f"train[:{percent}%]",
        "test": "test",
    }


_MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))

BUILTIN_SPECS = {
    "mnist": Spec(
        "mnist", splits=percent_splits(MNIST_HOLDOUT_PERCENT),
        class_names=_MNIST_CLASS_NAMES, value_range=(-1.0, 1.0),
    ),
    "mnist_small": Spec(
        None, npz_path=str(MNIST_SMALL_PATH), class_names=_MNIST_CLASS_NAMES,
        value_range=(-1.0, 1.0),
    ),
    "cifar10": Spec("cifar10", splits=percent_splits(10)),
    "celeba32": Spec(
        "celeb_a",
        splits={"train": "train", "valid": "validation", "test": "test"},
        label_path=("attributes", "Male"),
        class_names=("Female", "Male"),
        crop=(40, 20, 138, 138),
        image_size=32,
    ),
    "imagenet2012": Spec(
        "imagenet2012",
        splits={"train": "train", "valid": "validation", "test": "validation"},
        imagenet=True,
    ),
}
BUILTIN_SPECS["trans_celeba48"] = dataclasses.replace(
    BUILTIN_SPECS["celeba32"], translate_to=48
)


def _tfds_base_name(name):
    """'celeb_a/align:2.1.0' -> 'celeb_a'."""
    return name.split("/")[0].split(":")[0]


def _is_tfds_name(name):
    import tensorflow_datasets as tfds  # Only names that are not built in.

    # Community datasets ('namespace:name') are not supported; listing them
    # would refresh their index over the network.
    return _tfds_base_name(name) in tfds.list_builders(with_community_datasets=False)


def _unknown_name_error(name):
    return ValueError(
        f"Invalid value for argument `name`. Received: {name!r}. Expected one of "
        f"{DATASET_NAMES}, '{TRANSLATE_PREFIX}<name><N>' (e.g. 'trans_mnist42'), "
        f"the path of an '{NPZ_SUFFIX}' file of arrays, or the name of a TFDS "
        "image-classification dataset (features 'image' and 'label'; see "
        "`tfds.list_builders()`)."
    )


def _base_spec(name):
    """Returns the `Spec` of a name without a 'trans_' prefix."""
    if name in BUILTIN_SPECS:
        return BUILTIN_SPECS[name]
    if _is_tfds_name(name):
        return Spec(name)
    raise _unknown_name_error(name)


def _parse_translated_name(name):
    """'trans_mnist42' -> ('mnist', 42); None when `name` has no such form.

    A built-in name followed by the size wins, then the longest TFDS name, so
    'trans_cifar10048' is cifar100 at 48 (no size starts with 0), and the
    built-in names are parsed without importing tensorflow_datasets.
    """
    rest = name[len(TRANSLATE_PREFIX):]
    cuts = [
        (rest[:cut], rest[cut:]) for cut in range(len(rest) - 1, 0, -1)
        if rest[cut:].isdigit() and not rest[cut:].startswith("0")
    ]
    for base, size in cuts:
        if base in BUILTIN_SPECS:
            return base, int(size)
    for base, size in cuts:
        if _is_tfds_name(base):
            return base, int(size)
    return None


def check_positive_int(value, argument, allow_none=False):
    """Raises a `ValueError` naming `argument` unless `value` is an int >= 1."""
    if value is None and allow_none:
        return
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value <= 0:
        expected = "None or a positive integer" if allow_none else "a positive integer"
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected {expected}. "
            f"Received: {value!r}"
        )


def check_split(split):
    """Raises a `ValueError` unless `split` is one of `SPLITS`."""
    if split not in SPLITS:
        raise ValueError(
            f"Invalid value for argument `split`. Expected one of {SPLITS}. "
            f"Received: {split!r}"
        )


def resolve_spec(name, translate_to=None, image_size=None, value_range=None):
    """Returns the `Spec` for a dataset name and the user's options.

    Args:
        name: str, dataset name (see the package docstring).
        translate_to: optional int, side of the noise-filled canvas.
        image_size: optional int, resize images to image_size×image_size.
        value_range: optional (lo, hi), pixel range after preprocessing.

    Returns:
        A `Spec`.

    Raises:
        TypeError: if `name` is not a string.
        ValueError: for unknown names or invalid options.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"Invalid type for argument `name`. Expected str. Received: {name!r} "
            f"of type {type(name).__name__}"
        )
    check_positive_int(translate_to, "translate_to", allow_none=True)
    check_positive_int(image_size, "image_size", allow_none=True)
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

    if name in BUILTIN_SPECS:
        spec = BUILTIN_SPECS[name]
    elif name.endswith(NPZ_SUFFIX):
        spec = Spec(None, npz_path=name)
    elif name.startswith(TRANSLATE_PREFIX):
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


def preprocessed_shape(spec, source_shape, name):
    """(H, W, C) after preprocessing; validates that it is fully known.

    Args:
        spec: a `Spec`.
        source_shape: (H, W, C) of the stored images, None for unknown dims.
        name: str, the dataset name (for messages).
    """
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


def preprocessed_range(spec):
    """(lo, hi), the pixel range after preprocessing."""
    if spec.imagenet:
        lows = [-m / s for m, s in zip(IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB)]
        highs = [(1 - m) / s for m, s in zip(IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB)]
        return (float(min(lows)), float(max(highs)))
    return spec.value_range

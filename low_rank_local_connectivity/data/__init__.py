"""Datasets: the paper's, any TFDS image classifier, MNIST idx files, .npz arrays.

A dataset is resolved once, `data.resolve(name, **options)` (or
`data.resolve_config(config.dataset)`), into a `ResolvedDataset`:

- `.metadata`: a `DatasetMetadata` (classes, split sizes, image shape and
  pixel range after preprocessing);
- `.make_dataset(split, batch_size=..., is_training=...)`: the tf.data
  pipeline of `(image, label, mask)` batches: image float32 (b, H, W, C)
  channels_last, label int32 (b,), mask float32 (b,) that is 1 for real
  examples and 0 for the padding that fills the last evaluation batch;
- `.numpy_batches(split, ...)`: the same batches as NumPy arrays, without
  TensorFlow, for the datasets held in memory, resumable at any step;
- `.arrays(split)`: the raw uint8 images and labels of a dataset in memory;
- `.check_files()`, `.find_unreadable_files(split)`: the state of the files;
- `.serving_preprocess(images_uint8)`: the scaling inside an exported
  SavedModel.

Dataset names (docs/design.md §4):

- 'mnist': TFDS mnist; train = train[8%:], valid = train[:8%], test = test; pixels
  in [-1, 1]. With `idx_dir=<folder>` it is read from MNIST's four idx files
  instead, in TFDS's order (the same examples in the same order per split),
  without TFDS.
- 'mnist_small': a fixed, class-balanced subset of real MNIST embedded in the package
  (5,000 / 1,000 / 1,000 images from MNIST train[8%:] / train[:8%] / test, made by
  `tools/make_mnist_small.py`, sha256 `array_sources.MNIST_SMALL_SHA256`; MNIST
  by Yann LeCun and Corinna Cortes, CC BY-SA 3.0); same preprocessing as 'mnist';
  never touches TFDS or the network.
- 'cifar10': train = train[10%:], valid = train[:10%], test = test; pixels in [0, 1].
- 'celeba32': TFDS celeb_a, label = attribute 'Male' (classes Female, Male), official
  splits, crop rows [40, 178) and cols [20, 158), bicubic resize to 32×32, pixels in
  [0, 1].
- 'trans_celeba48': 'celeba32' placed at a random offset in a noise-filled 48×48
  canvas (see `preprocessing.translate_to_canvas`).
- 'imagenet2012': ResNet preprocessing at 224×224 (random-resized crop and flip for
  training, centre crop for evaluation), per-channel mean/stddev normalisation;
  train = train, valid = test = validation (ImageNet's test labels are not public).
- 'trans_<name><N>', e.g. 'trans_mnist42': dataset <name> (any of the above but
  'imagenet2012', or a TFDS name) translated into an N×N noise-filled canvas; the
  `translate_to=N` option does the same for any name.
- '<path>.npz': a dataset of arrays in memory (format: `array_sources`), pixels
  in [0, 1] unless `value_range` says otherwise.
- Any other TFDS image-classification dataset by its TFDS name (features 'image' and
  'label'): train / valid = 'train' / 'validation', or train[8%:] / train[:8%] when
  the dataset has no validation split (or uses it as its test split); test = 'test'
  (else 'validation'). Pixels in [0, 1] unless `value_range` says otherwise; resized
  to `image_size`×`image_size` when given.

Datasets in memory ('mnist_small', '.npz', 'mnist' with `idx_dir`, and their
translated forms) serve both paths; TFDS datasets serve tf.data only. Importing
this package and the NumPy path import neither TensorFlow nor TFDS.
"""

from low_rank_local_connectivity.data.dataset import DatasetMetadata
from low_rank_local_connectivity.data.dataset import resolve
from low_rank_local_connectivity.data.dataset import resolve_config
from low_rank_local_connectivity.data.dataset import ResolvedDataset
from low_rank_local_connectivity.data.errors import DataNotFoundError
from low_rank_local_connectivity.data.names import DATASET_NAMES
from low_rank_local_connectivity.data.names import SPLITS

__all__ = [
    "DATASET_NAMES",
    "DataNotFoundError",
    "DatasetMetadata",
    "ResolvedDataset",
    "SPLITS",
    "resolve",
    "resolve_config",
]

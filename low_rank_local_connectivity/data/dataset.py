"""One dataset, resolved once: its metadata, pipelines and serving scaling.

`resolve(name, ...)` checks the name and the options at once and returns a
`ResolvedDataset`. Its data are located at the first use that needs them
(`metadata`, `check_files`, a pipeline), and only then: TFDS data are
prepared or refused (`DataNotFoundError`) once, arrays are read once.
`serving_preprocess` needs no data, so a run can be exported where its data
are absent. TensorFlow and TFDS are imported only by the TF-only methods and
for TFDS-served datasets.
"""

import dataclasses
import functools
import inspect
import os

import numpy as np

from low_rank_local_connectivity.data import array_sources
from low_rank_local_connectivity.data import names
from low_rank_local_connectivity.data import numpy_pipeline


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """What a model and a trainer need to know about a dataset.

    Attributes:
        name: str, the dataset name given to `resolve`, e.g. 'trans_mnist42'.
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


def _check_path(argument, value):
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"Invalid type for argument `{argument}`. Expected None, str or a "
            f"path. Received: {value!r}"
        )


def _check_seed(seed):
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
    ):
        raise TypeError(
            f"Invalid type for argument `seed`. Expected None or int. Received: "
            f"{seed!r}"
        )


class ResolvedDataset:
    """A dataset and its options; build it with `resolve` or `resolve_config`.

    Attributes:
        name: str, the dataset name.
        spec: `names.Spec`, how it is read and preprocessed.
        metadata: `DatasetMetadata` (locates the data on first access).
    """

    def __init__(self, name, spec, *, data_dir, download, manual_dir, idx_dir,
                 shuffle_buffer_size):
        self.name = name
        self.spec = spec
        self._data_dir = data_dir
        self._download = download
        self._manual_dir = manual_dir
        self._idx_dir = idx_dir
        self._shuffle_buffer_size = shuffle_buffer_size

    def __repr__(self):
        return f"ResolvedDataset({self.name!r}, {self.spec})"

    @property
    def in_memory(self):
        """Whether the dataset is served from arrays (and the NumPy path)."""
        return self.spec.tfds_name is None or self._idx_dir is not None

    @functools.cached_property
    def _source(self):
        if self._idx_dir is not None:
            return array_sources.mnist_idx_source(self._idx_dir)
        if self.spec.tfds_name is None:
            return array_sources.npz_source(self.spec.npz_path)
        from low_rank_local_connectivity.data import tfds_source

        return tfds_source.TfdsSource(
            self.spec, self.name, self._data_dir, self._download, self._manual_dir
        )

    @property
    def _full_spec(self):
        """`spec` with what TFDS tells (splits, class names) filled in."""
        return self.spec if self.in_memory else self._source.spec

    @functools.cached_property
    def _image_shape(self):
        """(H, W, C) after preprocessing; checks the options against the data."""
        return names.preprocessed_shape(
            self._full_spec, self._source.image_shape, self.name
        )

    @functools.cached_property
    def metadata(self):
        """The `DatasetMetadata`; the first access locates the data.

        Raises:
            DataNotFoundError: if the data is missing and may not, or could
                not, be downloaded.
            ValueError: if the options do not fit the data (e.g. a canvas
                smaller than the images).
        """
        class_names = tuple(self._full_spec.class_names or self._source.class_names)
        return DatasetMetadata(
            name=self.name,
            num_classes=len(class_names),
            class_names=class_names,
            num_examples=self._source.num_examples(),
            image_shape=self._image_shape,
            value_range=names.preprocessed_range(self._full_spec),
        )

    def check_files(self):
        """Raises `DataNotFoundError` when a split's files are missing.

        A fast existence check (no record is read); arrays in memory have
        nothing to miss.
        """
        if not self.in_memory:
            self._source.check_files()

    def find_unreadable_files(self, split, read_records=True):
        """Shards of a split that are missing or cannot be read through.

        With `read_records`, every record of every shard of the split is read
        and its checksum verified (used to name the culprit after a
        `tf.errors.DataLossError`); otherwise only the files' existence is
        checked.

        Returns:
            list of (path, reason) pairs; empty for datasets in memory and for
            datasets whose split files are not recorded in their metadata.
        """
        names.check_split(split)
        if self.in_memory:
            return []
        return self._source.find_unreadable_files(split, read_records)

    def arrays(self, split):
        """The raw split of a dataset in memory: uint8 (N, h, w, C), int32 (N,).

        The arrays are read-only and shared by every caller.

        Raises:
            ValueError: for a split that is not one of `SPLITS`, or a dataset
                that TFDS serves.
        """
        names.check_split(split)
        self._check_in_memory("arrays")
        return self._source.images[split], self._source.labels[split]

    def _check_in_memory(self, method):
        if not self.in_memory:
            raise ValueError(
                f"Dataset {self.name!r} is read through TFDS; `{method}` serves "
                "datasets in memory: 'mnist_small', an .npz of arrays, or 'mnist' "
                "(and 'trans_mnist<N>') with `idx_dir`."
            )

    def make_dataset(self, split, *, batch_size, is_training, seed=None,
                     input_context=None):
        """Returns the tf.data input pipeline of one split.

        Training (`is_training=True`): files and examples shuffled (buffer
        `shuffle_buffer_size`), repeated forever, batched with drop_remainder,
        prefetched; mask is all ones. Evaluation: one pass in a fixed order; the
        last batch is padded to full size with zero images, label 0 and mask 0,
        so masked metrics count every real example exactly once. Random
        preprocessing (translation canvas, ImageNet crops and flips) uses
        stateless ops seeded per element from `seed`, so a given `seed`
        reproduces the same stream.

        With a `tf.distribute.InputContext`, the examples are sharded over the
        input pipelines and batched at
        `input_context.get_per_replica_batch_size(batch_size)` (as
        `strategy.distribute_datasets_from_function` expects).

        Args:
            split: str, one of 'train', 'valid', 'test'.
            batch_size: int, GLOBAL batch size.
            is_training: bool, training or evaluation pipeline.
            seed: optional int, makes shuffling and random preprocessing
                deterministic.
            input_context: optional `tf.distribute.InputContext`.

        Returns:
            `tf.data.Dataset` of (image float32 (b, H, W, C), label int32 (b,),
            mask float32 (b,)), b the per-replica batch size.

        Raises:
            DataNotFoundError: if the data is missing and may not, or could
                not, be downloaded.
            TypeError, ValueError: for invalid arguments.
        """
        names.check_split(split)
        names.check_positive_int(batch_size, "batch_size")
        if not isinstance(is_training, bool):
            raise TypeError(
                f"Invalid type for argument `is_training`. Expected bool. Received: "
                f"{is_training!r}"
            )
        _check_seed(seed)
        from low_rank_local_connectivity.data import tf_pipeline

        image_shape = self._image_shape
        if self.in_memory:
            records = tf_pipeline.array_records(*self.arrays(split))
        else:
            records = self._source.records(split, is_training, seed)
        return tf_pipeline.batches(
            records, self._full_spec, image_shape, batch_size=batch_size,
            is_training=is_training, seed=seed,
            shuffle_buffer_size=self._shuffle_buffer_size, input_context=input_context,
        )

    def numpy_batches(self, split, *, batch_size, is_training, seed=None,
                      start_step=0, shard_index=0, num_shards=1):
        """NumPy (image, label, mask) batches, without TensorFlow.

        The batches of `make_dataset` for a dataset in memory, with exact
        resumption: an iterator made with `start_step=s` yields what an
        uninterrupted one yields from step s on (see `numpy_pipeline`).

        Args:
            split: str, one of 'train', 'valid', 'test'.
            batch_size: int, GLOBAL batch size (a multiple of `num_shards`).
            is_training: bool: infinite shuffled epochs, or one padded pass.
            seed: optional non-negative int (None: a fresh one).
            start_step: int, the step of the first batch.
            shard_index, num_shards: ints, this shard of every global batch.

        Returns:
            A generator of (images float32 (b, H, W, C), labels int32 (b,),
            mask float32 (b,)), b = batch_size // num_shards.

        Raises:
            ValueError: for a TFDS-served dataset, `image_size` (the NumPy path
                does not resize) or invalid arguments.
        """
        images, labels = self.arrays(split)
        numpy_pipeline.check_supported(self.spec, self.name)
        return numpy_pipeline.batches(
            images, labels, self.spec, split, self._image_shape,
            batch_size=batch_size,
            is_training=is_training, seed=seed, start_step=start_step,
            shard_index=shard_index, num_shards=num_shards,
        )

    def serving_preprocess(self, images_uint8):
        """The scaling an exported SavedModel applies to its uint8 input.

        Graph-safe TF ops, dynamic batch; `images_uint8` (B, H, W, C) already
        has the preprocessed `image_shape`. Needs no data.

        Raises:
            TypeError: if `images_uint8` is not uint8.
        """
        from low_rank_local_connectivity.data import preprocessing

        return preprocessing.serving_preprocess(self.spec, images_uint8)


def resolve(name, *, data_dir=None, download=False, manual_dir=None, idx_dir=None,
            translate_to=None, image_size=None, value_range=None,
            shuffle_buffer_size=10_000):
    """Returns the `ResolvedDataset` of a dataset name and its options.

    Args:
        name: str, dataset name (see the package docstring).
        data_dir: optional str, TFDS data_dir (default: TFDS's own, or
            `TFDS_DATA_DIR`).
        download: bool, let TFDS download and prepare missing data.
        manual_dir: optional str, folder with the dataset's original files.
        idx_dir: optional str, folder with MNIST's idx files: 'mnist' and
            'trans_mnist<N>' are then read from them, in TFDS's order,
            without TFDS.
        translate_to: optional int, place images in a noise-filled canvas of
            this side.
        image_size: optional int, resize images to image_size×image_size.
        value_range: optional (lo, hi), pixel range after preprocessing.
        shuffle_buffer_size: int, examples in the tf.data shuffle buffer.

    Raises:
        TypeError, ValueError: for invalid arguments or unknown names.
    """
    spec = names.resolve_spec(name, translate_to, image_size, value_range)
    if not isinstance(download, bool):
        raise TypeError(
            f"Invalid type for argument `download`. Expected bool. Received: "
            f"{download!r}"
        )
    for argument, value in (("data_dir", data_dir), ("manual_dir", manual_dir),
                            ("idx_dir", idx_dir)):
        _check_path(argument, value)
    names.check_positive_int(shuffle_buffer_size, "shuffle_buffer_size")
    if idx_dir is not None and spec.tfds_name != "mnist":
        raise ValueError(
            "Invalid value for argument `idx_dir`. Expected None for dataset "
            f"{name!r} (idx files serve 'mnist' and 'trans_mnist<N>'). Received: "
            f"idx_dir={idx_dir!r}"
        )
    return ResolvedDataset(
        name, spec, data_dir=data_dir, download=download, manual_dir=manual_dir,
        idx_dir=idx_dir, shuffle_buffer_size=shuffle_buffer_size,
    )


def resolve_config(dataset):
    """`resolve` with the fields of a config's `dataset` section.

    Fields absent from the section (e.g. in the config of an older run) keep
    `resolve`'s defaults.
    """
    options = {
        name: dataset.get(name, parameter.default)
        for name, parameter in inspect.signature(resolve).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    if options["value_range"] is not None:
        options["value_range"] = tuple(options["value_range"])
    return resolve(dataset.name, **options)

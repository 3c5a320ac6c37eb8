"""TFDS access that fails fast, for the datasets read through TFDS.

Missing TFDS data fails with `DataNotFoundError` before TFDS can start its
minutes-long download retries: the prepared files are looked up in `data_dir`
first, and TFDS is asked to download only when `download=True` and the
download hosts answer (`downloads.unreachable_host`), or to prepare from
`manual_dir` only when every original file is present there. A failed
download leaves no partial files.

This module imports TensorFlow and TFDS; the package imports it only for a
dataset that TFDS serves.
"""

import contextlib
import dataclasses
import os
import pathlib

import tensorflow as tf
import tensorflow_datasets as tfds

from low_rank_local_connectivity.data import downloads
from low_rank_local_connectivity.data import errors
from low_rank_local_connectivity.data import names

_OPTION = errors.OPTION
_DOWNLOAD_ERRORS = (OSError, tfds.download.DownloadError)


def _original_file_names(builder):
    """File names TFDS expects to find in a manual_dir (or to download)."""
    file_names = []
    for url, url_info in (builder.url_infos or {}).items():
        filename = url_info.filename if url_info is not None else None
        file_names.append(filename or url.rstrip("/").rsplit("/", 1)[-1])
    return sorted(set(file_names))


def _ways_to_provide(builder):
    """How to provide a TFDS dataset, options written `{option}<name>`."""
    files = _original_file_names(builder)
    lines = [
        "Provide it in one of three ways:",
        f"  1. {_OPTION}download=True (needs internet): TFDS downloads and "
        "prepares it into the data_dir.",
        f"  2. {_OPTION}data_dir=<folder>: a prepared TFDS data_dir containing "
        f"{builder.name}/{builder.version}/ (e.g. made by `tfds build "
        f"{builder.name}` on a machine with internet and copied over); the "
        "TFDS_DATA_DIR environment variable sets the default.",
        f"  3. {_OPTION}manual_dir=<folder>: a folder with the original files"
        + (f" ({', '.join(files)})" if files else "")
        + "; TFDS prepares them into the data_dir without network.",
    ]
    if builder.name == "mnist":
        lines.append(
            f"For MNIST, {_OPTION}idx_dir=<folder> with its four idx files "
            "serves it without TFDS."
        )
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
    """A `DataNotFoundError`: the `problem` template, then the ways out."""
    return errors.DataNotFoundError("\n".join([problem, *_ways_to_provide(builder)]))


def _prepared_builder(tfds_name, name, data_dir, download, manual_dir):
    """Returns a TFDS builder whose data is prepared, or fails fast.

    With `download`, the download hosts must answer within seconds (TFDS
    would retry for minutes); a download that fails anyway has its partial
    files removed from the data_dir.

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
            problem = (
                f"{about} is not prepared in data_dir {root!r} (searched "
                f"{str(builder.data_dir)!r}), and {_OPTION}download is False."
            )
            if missing:
                problem += (
                    f" {_OPTION}manual_dir {str(manual_dir)!r} lacks the "
                    f"original files: {', '.join(missing)}."
                )
            raise _data_error(builder, problem)
    else:
        unreachable = downloads.unreachable_host(builder.url_infos or {})
        if unreachable is not None:
            raise _data_error(builder, (
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
        raise _data_error(builder, (
            f"{about} could not be downloaded and prepared into data_dir "
            f"{root!r} ({cause}); its partial files were removed."
        )) from error
    return builder


def _complete_spec(spec, info, name):
    """Fills the TFDS-dependent parts of `spec` from the builder's info.

    Checks that the dataset is an image classifier (an 'image' feature and a
    class-label feature at `spec.label_path`) and derives the splits of generic
    datasets.

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
                names.percent_splits(names.DEFAULT_HOLDOUT_PERCENT), test=test
            )
    return dataclasses.replace(spec, **updates)


class TfdsSource:
    """A TFDS dataset, prepared (or refused) once.

    Args:
        spec: a `names.Spec` with a `tfds_name`.
        name: str, our dataset name (for messages).
        data_dir: optional str, TFDS data_dir.
        download: bool, allow TFDS to download and prepare the dataset.
        manual_dir: optional str, folder with the original files.

    Attributes:
        builder: the `tfds.core.DatasetBuilder`, its data prepared.
        spec: `spec` with its splits and class names filled from TFDS.

    Raises:
        DataNotFoundError: if the data is missing and may not, or could not,
            be downloaded.
        ValueError: if the dataset is not an image classifier.
    """

    def __init__(self, spec, name, data_dir, download, manual_dir):
        self.builder = _prepared_builder(
            spec.tfds_name, name, data_dir, download, manual_dir
        )
        self.spec = _complete_spec(spec, self.builder.info, name)
        self._name = name

    @property
    def image_shape(self):
        """(H, W, C) of the stored images, None for unknown dims."""
        return tuple(self.builder.info.features["image"].shape)

    @property
    def class_names(self):
        return tuple(self.spec.class_names)

    def num_examples(self):
        """dict split -> number of examples."""
        return {
            split: int(self.builder.info.splits[self.spec.splits[split]].num_examples)
            for split in names.SPLITS
        }

    def records(self, split, is_training, seed):
        """Dataset of (raw image, int32 label) before any shuffling of examples.

        Training reads the files in a shuffled order (`seed`); ImageNet's
        images stay encoded (decoded with their crop).
        """
        spec = self.spec
        decoders = {"image": tfds.decode.SkipDecoding()} if spec.imagenet else None
        examples = self.builder.as_dataset(
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

        return examples.map(select, num_parallel_calls=tf.data.AUTOTUNE)

    def split_files(self, split):
        """Paths of the TFRecord shards that a split reads.

        Raises:
            KeyError, ValueError: if the split's files are not recorded.
        """
        builder = self.builder
        file_names = [
            str(instruction.filename)
            for instruction in builder.info.splits[self.spec.splits[split]]
            .file_instructions
        ]
        return sorted({
            name if os.path.isabs(name) or "://" in name
            else os.path.join(str(builder.data_dir), name)
            for name in file_names
        })

    def find_unreadable_files(self, split, read_records=True):
        """[(path, reason)] of the split's shards that are missing or unreadable.

        With `read_records`, every record of every shard is read and its
        checksum verified; otherwise only the files' existence is checked.
        Empty when the split's files are not recorded in the metadata.
        """
        try:
            paths = self.split_files(split)
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

    def check_files(self):
        """Raises `DataNotFoundError` when a split's files are missing."""
        for split in names.SPLITS:
            missing = self.find_unreadable_files(split, read_records=False)
            if missing:
                raise errors.DataNotFoundError(
                    f"Split {split!r} of dataset {self._name!r} is missing "
                    f"files: {', '.join(path for path, _ in missing)}. Prepare "
                    "the dataset again (delete its folder, then `tfds build` "
                    f"or {_OPTION}download=True)."
                )

"""Export of a trained run as a TensorFlow SavedModel and a `.keras` file.

The SavedModel has one serving signature, 'serving_default':

- input `images`: uint8 tensor (batch, H, W, C), any batch size, at the
  dataset's preprocessed image shape (`DatasetMetadata.image_shape`);
- outputs `probabilities` (float32 (batch, num_classes), softmax) and
  `classes` (int32 (batch,), arg-max).

The dataset's pixel scaling (`data.ResolvedDataset.serving_preprocess`) runs
inside the signature, so a client sends raw pixels and needs neither this
package nor Keras: `tf.saved_model.load(path).signatures['serving_default']`.
The signature refuses other inputs: a wrong dtype or rank, or another image
size, raises an error (checked again inside the graph, so that clients that
bypass the Python signature checks, such as TF Serving, are refused too).
`model.keras` is the Keras model (float32 logits, preprocessed inputs); it
needs this package imported to load (custom layers).

The export works for a run trained on any Keras backend. On TensorFlow the
SavedModel is written in-process; a run of another backend (JAX) has its
`model.keras` written first and turned into the SavedModel by a TensorFlow
process (`KERAS_BACKEND=tensorflow python -m low_rank_local_connectivity.export`)
where TensorFlow is installed; where it is not, `saved_model=False` exports
`model.keras` alone and the default stops with one line naming the package.

Exports are crash safe: everything is written to a staging folder inside
`export_dir` and moved into place, `serving_metadata.json` last. An export is
complete if and only if `serving_metadata.json` exists; an interrupted export
leaves at most a staging folder, removed by the next export.
"""

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time

import keras

from low_rank_local_connectivity import data
from low_rank_local_connectivity import fileio
from low_rank_local_connectivity.training import lock
from low_rank_local_connectivity.training import runs

SAVED_MODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"
SERVING_METADATA_FILE = "serving_metadata.json"
SERVING_SIGNATURE = "serving_default"


def _write_saved_model(model, dataset_config, image_shape, path):
    """Writes the SavedModel of `model` with its serving signature (TensorFlow)."""
    import tensorflow as tf

    dataset = data.resolve_config(dataset_config)
    image_shape = tuple(int(d) for d in image_shape)
    dims = ", ".join(map(str, image_shape))
    expected = f"a uint8 tensor of shape (batch, {dims})"
    module = tf.Module()
    module.model = model

    @tf.function(
        input_signature=[tf.TensorSpec([None, *image_shape], tf.uint8, name="images")]
    )
    def serve(images):
        # Compared as text: no broadcasting error for another rank.
        shape = tf.shape(images)
        received = tf.strings.reduce_join(
            tf.strings.as_string(shape[1:]), separator=","
        )
        check = tf.debugging.Assert(
            tf.equal(received, ",".join(map(str, image_shape))),
            [f"Invalid `images`: expected {expected}. Received shape:", shape],
        )
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        inputs = dataset.serving_preprocess(images)
        logits = tf.cast(module.model(inputs, training=False), tf.float32)
        return {
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }

    module.serve = serve
    tf.saved_model.save(module, path, signatures={SERVING_SIGNATURE: serve})


def _saved_model_from_keras_file(keras_path, dataset_config, image_shape, path):
    """Writes the SavedModel of a `.keras` file in a TensorFlow process.

    Raises:
        ValueError: if TensorFlow is not installed (one line naming it).
        OSError: if that process fails (its last output lines say why).
    """
    if importlib.util.find_spec("tensorflow") is None:
        raise ValueError(
            "A SavedModel export needs TensorFlow, which is not installed: "
            "pip install tensorflow, or pass saved_model=False "
            "(--saved_model=false) to export model.keras alone."
        )
    arguments = json.dumps(dict(keras=keras_path, dataset=dataset_config.to_dict(),
                                image_shape=list(image_shape), path=path))
    result = subprocess.run(
        [sys.executable, "-m", "low_rank_local_connectivity.export", arguments],
        capture_output=True, text=True,
        env=dict(os.environ, KERAS_BACKEND="tensorflow"),
    )
    if result.returncode:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise OSError(f"The TensorFlow process writing {path} failed: {tail}")


_STAGING_PREFIX = ".staging-"


def _remove_stale_staging(export_dir):
    """Removes the staging folders of exports that are no longer running."""
    for name in fileio.listdir(export_dir):
        name = name.rstrip("/")
        if not name.startswith(_STAGING_PREFIX):
            continue
        parts = name[len(_STAGING_PREFIX):].split("-")
        with contextlib.suppress(ValueError, IndexError):
            host, pid = "-".join(parts[:-2]), int(parts[-2])
            if parts[-1] == "old":
                host, pid = "-".join(parts[:-3]), int(parts[-3])
            if (host == socket.gethostname() and pid != os.getpid()
                    and lock.process_alive(pid)):
                continue  # A concurrent export on this host.
        fileio.rmtree(os.path.join(export_dir, name))


def load_serving_function(export_dir):
    """Loads the serving signature of an export, refusing anything but its input.

    `tf.saved_model.load(...).signatures[...]` casts NumPy arrays and Python
    lists to the signature's dtype without a check (float 0.7 becomes uint8
    0, 300 wraps to 44), and reports a wrong shape as a long binding error.
    The function returned here checks its input first: anything but uint8
    pixels of shape (batch, *input_shape) raises an error of one line that
    says what was expected and how to convert the usual mistakes.

    Args:
        export_dir: str, a directory written by `export_model`.

    Returns:
        A function `images -> {'probabilities', 'classes'}`.

    Raises:
        ValueError: if `export_dir` holds no complete export.
    """
    import tensorflow as tf

    metadata_path = os.path.join(export_dir, SERVING_METADATA_FILE)
    if not fileio.exists(metadata_path):
        raise ValueError(
            "Invalid value for argument `export_dir`. Expected a directory "
            f"with a complete export ({SERVING_METADATA_FILE} is written "
            f"last). Received: {export_dir!r}"
        )
    with fileio.open_file(metadata_path) as f:
        image_shape = tuple(json.load(f)["input_shape"])
    serve = tf.saved_model.load(
        os.path.join(export_dir, SAVED_MODEL_DIR)
    ).signatures[SERVING_SIGNATURE]
    expected = f"(batch, {', '.join(map(str, image_shape))})"

    def serve_checked(images):
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            hint = (
                " Convert floats in [0, 1] with (images * 255).round()"
                ".astype('uint8')." if images.dtype.is_floating else ""
            )
            raise TypeError(
                "Invalid dtype for argument `images`. Expected uint8 pixels. "
                f"Received: {images.dtype.name}. The export takes raw pixels "
                f"in [0, 255] of shape {expected}.{hint}"
            )
        shape = tuple(images.shape)
        if shape[1:] != image_shape:
            hint = ""
            if shape == image_shape:
                hint = " Add the batch axis: images[None]."
            elif shape[1:] == image_shape[:-1] and image_shape[-1] == 1:
                hint = " Add the channel axis: images[..., None]."
            raise ValueError(
                f"Invalid shape for argument `images`. Expected {expected}. "
                f"Received: {shape}.{hint}"
            )
        return serve(images=images)

    return serve_checked


def export_model(model_dir, export_dir, *, checkpoint="best", saved_model=True):
    """Exports a run as a SavedModel with a serving signature and `.keras`.

    Writes `export_dir/saved_model/`, `export_dir/model.keras` and
    `export_dir/serving_metadata.json` (dataset, class names, input shape,
    checkpoint and step). They are written to a staging folder first and
    moved into place, `serving_metadata.json` last: an interrupted export
    never leaves a half-written file in place of a complete one.

    Args:
        model_dir: str, a run directory written by the trainer (any backend).
        export_dir: str, output directory (created; existing exports in it are
            replaced).
        checkpoint: 'best', 'latest' or a checkpoint prefix.
        saved_model: bool, also write the SavedModel (it needs TensorFlow).

    Returns:
        dict with the paths 'saved_model' (None without it), 'keras',
        'metadata' and the exported 'checkpoint' and 'step'.

    Raises:
        ValueError: if `model_dir` is not a run directory, the checkpoint
            does not exist, or a SavedModel is asked for without TensorFlow.
        OSError: if writing fails (the previous export in `export_dir` is
            left as it was).
    """
    run = runs.open_run(model_dir)
    model, path, step = run.load_model(checkpoint)
    config, metadata = run.config, run.metadata
    image_shape = tuple(config.model.input_shape)
    fileio.makedirs(export_dir)
    _remove_stale_staging(export_dir)
    token = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
    staging = os.path.join(export_dir, f"{_STAGING_PREFIX}{token}")
    fileio.makedirs(staging)
    names = [KERAS_FILE, SERVING_METADATA_FILE]
    try:
        model.save(os.path.join(staging, KERAS_FILE))
        if saved_model:
            names.insert(0, SAVED_MODEL_DIR)
            target = os.path.join(staging, SAVED_MODEL_DIR)
            if keras.backend.backend() == "tensorflow":
                _write_saved_model(model, config.dataset, image_shape, target)
            else:
                _saved_model_from_keras_file(
                    os.path.join(staging, KERAS_FILE), config.dataset, image_shape,
                    target,
                )
        serving_metadata = dict(
            dataset=config.dataset.name,
            class_names=list(metadata["class_names"]),
            input_shape=list(image_shape),
            input_dtype="uint8",
            signature=SERVING_SIGNATURE if saved_model else None,
            outputs=["probabilities", "classes"],
            checkpoint=path,
            step=step,
        )
        with fileio.open_file(os.path.join(staging, SERVING_METADATA_FILE), "w") as f:
            f.write(json.dumps(serving_metadata, indent=2))
    except BaseException:  # A failed export leaves the previous one as it was.
        with contextlib.suppress(*fileio.io_errors()):
            fileio.rmtree(staging)
        raise
    metadata_path = os.path.join(export_dir, SERVING_METADATA_FILE)
    # Commit: un-mark the old export, move the new files in, mark it complete.
    if fileio.exists(metadata_path):
        fileio.remove(metadata_path)
    for name in [SAVED_MODEL_DIR, *names] if not saved_model else names:
        target = os.path.join(export_dir, name)
        if fileio.isdir(target):
            trash = os.path.join(export_dir, f"{_STAGING_PREFIX}{token}-old")
            fileio.rename(target, trash)
            fileio.rmtree(trash)
        if name in names:  # (A SavedModel of an earlier export is removed.)
            fileio.rename(os.path.join(staging, name), target)
    fileio.rmtree(staging)
    return dict(
        saved_model=os.path.join(export_dir, SAVED_MODEL_DIR) if saved_model else None,
        keras=os.path.join(export_dir, KERAS_FILE),
        metadata=metadata_path,
        checkpoint=path,
        step=step,
    )


def _main(argv):
    """A TensorFlow process turning a `.keras` file into the SavedModel."""
    import ml_collections

    arguments = json.loads(argv[1])
    model = keras.saving.load_model(arguments["keras"])
    _write_saved_model(model, ml_collections.ConfigDict(arguments["dataset"]),
                       arguments["image_shape"], arguments["path"])


if __name__ == "__main__":
    _main(sys.argv)

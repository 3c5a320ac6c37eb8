"""Export of a trained run as a TensorFlow SavedModel and a `.keras` file.

The SavedModel has one serving signature, 'serving_default':

- input `images`: uint8 tensor (batch, H, W, C), any batch size, at the
  dataset's preprocessed image shape (`DatasetMetadata.image_shape`);
- outputs `probabilities` (float32 (batch, num_classes), softmax) and
  `classes` (int32 (batch,), arg-max).

The dataset's pixel scaling (`data_provider.preprocess_serving_images`) runs
inside the signature, so a client sends raw pixels and needs neither this
package nor Keras: `tf.saved_model.load(path).signatures['serving_default']`.
`model.keras` is the Keras model (float32 logits, preprocessed inputs); it
needs this package imported to load (custom layers).
"""

import json
import os

import tensorflow as tf

from low_rank_local_connectivity import data_provider
from low_rank_local_connectivity import models
from low_rank_local_connectivity import trainer

SAVED_MODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"
SERVING_METADATA_FILE = "serving_metadata.json"
SERVING_SIGNATURE = "serving_default"
CHECKPOINTS = ("best", "latest")


class _ServingModule(tf.Module):
    """Holds the model and the serving function (uint8 in, probabilities out)."""

    def __init__(self, model, dataset_config, image_shape):
        super().__init__()
        self.model = model
        preprocessing = dict(
            translate_to=dataset_config.get("translate_to"),
            image_size=dataset_config.get("image_size"),
            value_range=(
                None if dataset_config.get("value_range") is None
                else tuple(dataset_config.value_range)
            ),
        )
        name = dataset_config.name

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, *image_shape], tf.uint8, name="images")
            ]
        )
        def serve(images):
            inputs = data_provider.preprocess_serving_images(
                name, images, **preprocessing
            )
            logits = tf.cast(self.model(inputs, training=False), tf.float32)
            return {
                "probabilities": tf.nn.softmax(logits),
                "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
            }

        self.serve = serve


def checkpoint_path(model_dir, checkpoint="best"):
    """Resolves the checkpoint of a run to export.

    Args:
        model_dir: str, a run directory written by the trainer.
        checkpoint: 'best' (best validation accuracy), 'latest', or an explicit
            checkpoint prefix path.

    Returns:
        str, the checkpoint prefix.

    Raises:
        ValueError: if there is no such checkpoint.
    """
    if checkpoint in CHECKPOINTS:
        subdir = trainer.BEST_DIR if checkpoint == "best" else trainer.CHECKPOINT_DIR
        path = tf.train.latest_checkpoint(os.path.join(model_dir, subdir))
    else:
        path = checkpoint if tf.io.gfile.exists(f"{checkpoint}.index") else None
    if path is None:
        raise ValueError(
            f"Invalid value for argument `checkpoint`. Expected one of "
            f"{CHECKPOINTS} (existing in {model_dir!r}) or a checkpoint prefix. "
            f"Received: {checkpoint!r}"
        )
    return path


def load_model(model_dir, checkpoint="best"):
    """Rebuilds the model of a run and restores a checkpoint into it.

    The model is built with the float32 dtype policy whatever the training
    precision (variables are float32 in both cases).

    Args:
        model_dir: str, a run directory written by the trainer.
        checkpoint: see `checkpoint_path`.

    Returns:
        A tuple (keras.Model, resolved config, checkpoint path, step).
    """
    config = trainer.load_config(model_dir)
    path = checkpoint_path(model_dir, checkpoint)
    model = models.build_model(config.model)
    step = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(model=model, global_step=step).read(
        path
    ).expect_partial().assert_existing_objects_matched()
    return model, config, path, int(step.numpy())


def export_model(model_dir, export_dir, *, checkpoint="best"):
    """Exports a run as a SavedModel with a serving signature and `.keras`.

    Writes `export_dir/saved_model/`, `export_dir/model.keras` and
    `export_dir/serving_metadata.json` (dataset, class names, input shape,
    checkpoint and step).

    Args:
        model_dir: str, a run directory written by the trainer.
        export_dir: str, output directory (created; existing exports in it are
            replaced).
        checkpoint: 'best', 'latest' or a checkpoint prefix.

    Returns:
        dict with the paths 'saved_model', 'keras', 'metadata' and the exported
        'checkpoint' and 'step'.

    Raises:
        ValueError: if `model_dir` is not a run directory or the checkpoint
            does not exist.
    """
    model, config, path, step = load_model(model_dir, checkpoint)
    metadata = trainer.load_metadata(model_dir)
    image_shape = tuple(config.model.input_shape)
    module = _ServingModule(model, config.dataset, image_shape)
    tf.io.gfile.makedirs(export_dir)
    saved_model_path = os.path.join(export_dir, SAVED_MODEL_DIR)
    if tf.io.gfile.exists(saved_model_path):
        tf.io.gfile.rmtree(saved_model_path)
    tf.saved_model.save(
        module, saved_model_path, signatures={SERVING_SIGNATURE: module.serve}
    )
    keras_path = os.path.join(export_dir, KERAS_FILE)
    model.save(keras_path)
    serving_metadata = dict(
        dataset=config.dataset.name,
        class_names=list(metadata["class_names"]),
        input_shape=list(image_shape),
        input_dtype="uint8",
        signature=SERVING_SIGNATURE,
        outputs=["probabilities", "classes"],
        checkpoint=path,
        step=step,
    )
    metadata_path = os.path.join(export_dir, SERVING_METADATA_FILE)
    with tf.io.gfile.GFile(metadata_path, "w") as f:
        f.write(json.dumps(serving_metadata, indent=2))
    return dict(
        saved_model=saved_model_path,
        keras=keras_path,
        metadata=metadata_path,
        checkpoint=path,
        step=step,
    )


r"""Exports a trained run as a SavedModel (serving signature) and `.keras`.

Usage:

    lrlc-export --model_dir=runs/mnist_small_lrlc \
        --export_dir=runs/mnist_small_lrlc/export --checkpoint=best

Serve it (uint8 pixels of shape (batch, 28, 28, 1) for the MNIST presets):

    from low_rank_local_connectivity import export
    serve = export.load_serving_function("runs/mnist_small_lrlc/export")
    outputs = serve(uint8_images)
    outputs["probabilities"], outputs["classes"]

`load_serving_function` refuses any other dtype or shape in one line. Clients
with only TensorFlow call the `serving_default` signature of
`tf.saved_model.load(".../export/saved_model")` with a tf.uint8 tensor: the
signature refuses tensors of another dtype, rank or image size, but TensorFlow
casts NumPy arrays and lists to uint8 before it sees them (0.7 becomes 0).
Exit status: 0 on success, 1 with a one-line `error:` message.
"""

import json
import os
import sys

from absl import flags

from low_rank_local_connectivity import export
from low_rank_local_connectivity import fileio
from low_rank_local_connectivity.cli import startup

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Run directory written by lrlc-train (any backend)."
)
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "Output directory (default: <model_dir>/export)."
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "best",
    "'best' (best validation accuracy), 'latest', or a checkpoint prefix.",
)
_SAVED_MODEL = flags.DEFINE_bool(
    "saved_model", True,
    "Also write the SavedModel (needs TensorFlow); false: model.keras alone.",
)
flags.mark_flag_as_required("model_dir")


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    export_dir = _EXPORT_DIR.value or os.path.join(_MODEL_DIR.value, "export")
    try:
        paths = export.export_model(
            _MODEL_DIR.value, export_dir, checkpoint=_CHECKPOINT.value,
            saved_model=_SAVED_MODEL.value,
        )
    except (TypeError, ValueError, *fileio.io_errors()) as error:
        sys.exit(f"error: {' '.join(str(error).split())}")
    print(json.dumps(paths, indent=2))


def run():
    """The `lrlc-export` command (also `python scripts/export_saved_model.py`)."""
    startup.run(main)

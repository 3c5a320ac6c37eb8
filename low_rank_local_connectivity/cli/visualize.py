r"""Renders the combining weights of every LRLC layer of a trained model.

One PNG per LRLC layer in `--output_dir`: K heat maps (one per basis, shared
and labelled colour scale, output rows and columns on the axes); for
input-dependent layers one row per example test image, the image first.

Example:

    lrlc-visualize \
        --model_dir=runs/paper/trans_mnist42/lrlc_input_dependent_pos2_rank4_seed0 \
        --output_dir=runs/paper/combining_weights --num_images=4
"""

import sys

from absl import flags

from low_rank_local_connectivity import run_visualization
from low_rank_local_connectivity.cli import startup

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Trainer model_dir.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the PNGs go.")
_NUM_IMAGES = flags.DEFINE_integer(
    "num_images", 4, "Example test images for input-dependent layers."
)
_CHECKPOINT = flags.DEFINE_enum(
    "checkpoint", "best", ("best", "latest"), "Checkpoint to restore."
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir (default: the one the run used)."
)
flags.mark_flags_as_required(["model_dir", "output_dir"])


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    try:
        paths = run_visualization.visualize_model_dir(
            _MODEL_DIR.value, _OUTPUT_DIR.value, num_images=_NUM_IMAGES.value,
            checkpoint=_CHECKPOINT.value, data_dir=_DATA_DIR.value,
        )
    except (TypeError, ValueError) as error:
        sys.exit(f"error: {error}")
    if not paths:
        sys.exit(f"error: the model in {_MODEL_DIR.value} has no LRLC layer.")
    for path in paths:
        print(path)


def run():
    """The `lrlc-visualize` command."""
    startup.run(main)

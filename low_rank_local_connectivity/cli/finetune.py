r"""Converts the convolutions of a finished run into LRLC layers and fine-tunes it.

The new run starts from a checkpoint of `--source_dir` with the same function
(see `low_rank_local_connectivity/convert.py`) and is trained by the trainer in
`--model_dir` with the source run's recipe: it resumes, checkpoints and exports
like any run. `--spatial_rank=0` fine-tunes the source architecture as it is,
the baseline a conversion should beat.

Usage:

    lrlc-quickstart      # trains runs/quickstart/mnist_small_conv
    lrlc-finetune --source_dir=runs/quickstart/mnist_small_conv \
        --model_dir=runs/quickstart/mnist_small_conv_to_lrlc2 --spatial_rank=2 \
        --train_steps=100

Exit status: 0 on success, 1 with a one-line `error:` message.
"""

import sys

from absl import flags

from low_rank_local_connectivity import data
from low_rank_local_connectivity import finetuning
from low_rank_local_connectivity import layers
from low_rank_local_connectivity import training
from low_rank_local_connectivity.cli import startup

_SOURCE_DIR = flags.DEFINE_string(
    "source_dir", None, "model_dir of the finished run to start from."
)
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory of the new run.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "latest", "Source checkpoint: 'latest', 'best' or a prefix."
)
_SPATIAL_RANK = flags.DEFINE_integer(
    "spatial_rank", 2, "Rank K of the LRLC layers; 0 keeps the convolutions."
)
_LAYERS = flags.DEFINE_list(
    "layers", None, "Names of the Conv2D layers to convert (default: all)."
)
_INPUT_DEPENDENT = flags.DEFINE_bool(
    "input_dependent", False, "Predict the combining weights from the input."
)
_NORMALIZE_WEIGHTS = flags.DEFINE_enum(
    "normalize_weights", "softmax", [n for n in layers.NORMALIZATIONS if n],
    "Normalisation of the combining weights.",
)
_BASIS_PERTURBATION = flags.DEFINE_float(
    "basis_perturbation", 0.1,
    "Zero-sum perturbation of the bases, relative to their RMS.",
)
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", None, "Fine-tuning steps (default: the source run's)."
)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", None, "Peak learning rate (default: the source run's)."
)
_SEED = flags.DEFINE_integer("seed", None, "Seed (default: the source run's).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir (default: the source run's)."
)
flags.mark_flags_as_required(["source_dir", "model_dir"])


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    conversion = None
    if _SPATIAL_RANK.value:
        conversion = dict(
            spatial_rank=_SPATIAL_RANK.value, layers=_LAYERS.value,
            input_dependent=_INPUT_DEPENDENT.value,
            normalize_weights=_NORMALIZE_WEIGHTS.value,
            basis_perturbation=_BASIS_PERTURBATION.value,
        )
    try:
        config = finetuning.finetune_config(
            _SOURCE_DIR.value, conversion=conversion, checkpoint=_CHECKPOINT.value,
            train_steps=_TRAIN_STEPS.value, learning_rate=_LEARNING_RATE.value,
            seed=_SEED.value, data_dir=_DATA_DIR.value,
        )
        results = training.train_and_evaluate(config, _MODEL_DIR.value)
    except (
        TypeError, ValueError, data.DataNotFoundError,
        training.TrainerError,
    ) as error:
        sys.exit(f"error: {' '.join(str(error).split())}")
    print(
        f"{config.preset}: {results['num_parameters']:,} parameters, "
        f"{results['train_steps']} steps, test accuracy "
        f"{results['test']['accuracy']:.4f} (best valid "
        f"{results['best_valid']['metrics']['accuracy']:.4f})"
    )


def run():
    """The `lrlc-finetune` command."""
    startup.run(main)

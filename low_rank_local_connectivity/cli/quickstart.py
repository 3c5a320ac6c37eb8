"""Quick start: a convolution vs an LRLC network on the embedded MNIST subset.

Trains the paper's small network twice on 'mnist_small' (5,000 real MNIST
training images shipped with the package; no download), once all-convolution
('mnist_small_conv') and once with an LRLC layer of rank 2 in block 2
('mnist_small_lrlc'), and prints both accuracies. A few minutes on 2 CPU
cores. Rerunning with the same --model_dir resumes / reuses the runs.

Usage:

    lrlc-quickstart [--model_dir=runs/quickstart] [--train_steps=300]
"""

import os
import sys

from absl import flags

from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.cli import startup

PRESETS = ("mnist_small_conv", "mnist_small_lrlc")

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "runs/quickstart", "Parent directory of the two runs."
)
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", None, "Training steps of each run (default: the preset's)."
)


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    rows = []
    for preset in PRESETS:
        config = experiment.get_config(preset)
        # Bit-reproducible: the table repeats exactly on the same kind of machine.
        config.train.deterministic = True
        if _TRAIN_STEPS.value is not None:
            config.train.train_steps = _TRAIN_STEPS.value
            config.train.eval_every_steps = min(
                config.train.eval_every_steps, _TRAIN_STEPS.value
            )
        model_dir = os.path.join(_MODEL_DIR.value, preset)
        print(f"Training {preset} in {model_dir} ...", flush=True)
        try:
            results = training.train_and_evaluate(config, model_dir)
        except (TypeError, ValueError, training.TrainerError) as error:
            sys.exit(f"error: {' '.join(str(error).split())}")
        rows.append((preset, results))
    print()
    print(f"{'experiment':<20} {'parameters':>10} {'steps':>6} "
          f"{'valid acc':>9} {'test acc':>8}")
    for preset, results in rows:
        print(
            f"{preset:<20} {results['num_parameters']:>10,} "
            f"{results['train_steps']:>6} "
            f"{results['best_valid']['metrics']['accuracy']:>9.4f} "
            f"{results['test']['accuracy']:>8.4f}"
        )
    print(f"\n{startup.tensorboard_hint(_MODEL_DIR.value)}")


def run():
    """The `lrlc-quickstart` command."""
    startup.run(main)

"""Fine-tuning a converted network against continuing to train the convolution.

Per seed: trains the small convolutional network (`<dataset>_conv`) for
`--base_steps`, then fine-tunes that run for `--finetune_steps` twice or more,
from the same checkpoint and with the same recipe: 'conv' as it is, 'lrlc<K>'
with every convolution converted to an LRLC layer of rank K (fixed combining
weights) and, with `--input_dependent`, 'lrlc<K>_input_dependent'. Writes
results.csv, results.json and results.md (test accuracy mean ± standard error
over seeds, and the paired gain over 'conv') to `--results_dir`. Finished runs
in `--output_dir` are reused and interrupted ones resume.

Usage (the README's table, on real MNIST; $MNIST_TFDS_DIR is a prepared TFDS
data_dir holding `mnist`):

    python scripts/conversion_experiment.py --dataset=mnist \
        --data_dir=$MNIST_TFDS_DIR --seeds=0,1,2 \
        --base_steps=400 --finetune_steps=200 --output_dir=runs/conversion \
        --results_dir=runs/conversion/results

(The committed docs/results/conversion/ was written with
--results_dir=docs/results/conversion.)

Exit status: 0 on success, 1 with a one-line `error:` message.
"""

import sys

from absl import flags

from low_rank_local_connectivity import data
from low_rank_local_connectivity import finetuning
from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.cli import startup

_DATASET = flags.DEFINE_enum(
    "dataset", "mnist", [d for d in experiment.DATASETS if d != "imagenet2012"],
    "Dataset of the base runs (preset <dataset>_conv).",
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_BASE_STEPS = flags.DEFINE_integer("base_steps", 400, "Steps of the base runs.")
_FINETUNE_STEPS = flags.DEFINE_integer(
    "finetune_steps", 200, "Steps of every fine-tuning run."
)
_SPATIAL_RANK = flags.DEFINE_integer("spatial_rank", 2, "Rank K of the LRLC layers.")
_INPUT_DEPENDENT = flags.DEFINE_bool(
    "input_dependent", False, "Also fine-tune with input-dependent combining weights."
)
_NUM_FILTERS = flags.DEFINE_integer("num_filters", 64, "Filters of every block.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory of the runs.")
_RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "Where the tables go (default: output_dir)."
)
flags.mark_flags_as_required(["output_dir"])


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    if not all(seed.lstrip("-").isdigit() for seed in _SEEDS.value):
        sys.exit(f"error: --seeds expects integers, received {_SEEDS.value}")
    seeds = [int(seed) for seed in _SEEDS.value]
    try:
        config = experiment.get_config(f"{_DATASET.value}_conv")
        config.dataset.data_dir = _DATA_DIR.value
        config.model.num_filters = (_NUM_FILTERS.value,) * 3
        config.train.update(
            train_steps=_BASE_STEPS.value, eval_every_steps=_BASE_STEPS.value,
            checkpoint_every_steps=_BASE_STEPS.value,
        )
        arms = finetuning.comparison_arms(_SPATIAL_RANK.value, _INPUT_DEPENDENT.value)
        rows = finetuning.run_comparison(
            config, _OUTPUT_DIR.value, seeds=seeds,
            finetune_steps=_FINETUNE_STEPS.value, arms=arms,
        )
        settings = dict(
            dataset=_DATASET.value, seeds=seeds, base_steps=_BASE_STEPS.value,
            finetune_steps=_FINETUNE_STEPS.value, num_filters=_NUM_FILTERS.value,
            arms=arms, base_train=config.train.to_dict(),
        )
        paths = finetuning.write_results(
            rows, _RESULTS_DIR.value or _OUTPUT_DIR.value, settings
        )
    except (
        TypeError, ValueError, data.DataNotFoundError,
        training.TrainerError,
    ) as error:
        sys.exit(f"error: {' '.join(str(error).split())}")
    for path in paths:
        print(path)


if __name__ == "__main__":
    startup.run(main)

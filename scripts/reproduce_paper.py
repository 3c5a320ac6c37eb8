"""Runs the paper's experiment grid and aggregates it into tables and plots.

Every cell (layer type × block position × rank × seed) is a trainer run in
`<output_dir>/<dataset>/<cell>`; finished cells are skipped, interrupted ones
resume. The results (results.csv, results.json, results.md and
accuracy_vs_rank_<dataset>.png) are written to `--results_dir` (default
`--output_dir`).

Examples:

    # A smoke test: a tiny grid on the embedded MNIST subset (minutes on 2
    # CPU cores); it checks that everything runs, its numbers are no result.
    python scripts/reproduce_paper.py --preset=quick --output_dir=runs/quick

    # The layer-position-2 MNIST grid of docs/results, on real MNIST (in a
    # prepared TFDS data_dir; a first `scripts/train.py` run with
    # --config.dataset.download=True puts it in ~/tensorflow_datasets).
    python scripts/reproduce_paper.py --dataset=mnist \
        --data_dir=$HOME/tensorflow_datasets --positions=2 \
        --ranks=1,2,4,8 --seeds=0,1,2 --train_steps=600 --parallel=2 \
        --output_dir=runs/paper --results_dir=docs/results

    # Cluster fan-out: task i of N runs every N-th cell, then aggregate once.
    python scripts/reproduce_paper.py --dataset=cifar10 --num_shards=N \
        --shard_index=i --output_dir=/shared/runs
    python scripts/reproduce_paper.py --dataset=cifar10 --aggregate_only \
        --output_dir=/shared/runs
"""

import sys

import _cli  # Before anything imports TensorFlow.

_cli.start()

from absl import app
from absl import flags
from absl import logging

from low_rank_local_connectivity import experiments

_PRESET = flags.DEFINE_enum(
    "preset", "paper", experiments.PRESETS,
    "'paper': the grid of --dataset; 'quick': a smoke test, a tiny grid on mnist_small.",
)
_DATASET = flags.DEFINE_enum(
    "dataset", "mnist", tuple(experiments.GRIDS),
    "Dataset of the grid (ignored with --preset=quick).",
)
_LAYER_TYPES = flags.DEFINE_list(
    "layer_types", None,
    f"Subset of layer types, from {', '.join(experiments.LAYER_TYPES)}.",
)
_POSITIONS = flags.DEFINE_list("positions", None, "Subset of block positions.")
_RANKS = flags.DEFINE_list("ranks", None, "Subset of ranks.")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds.")
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", None, "Overrides the recipe's config.train.train_steps."
)
_EVAL_EVERY_STEPS = flags.DEFINE_integer(
    "eval_every_steps", None,
    "Overrides config.train.eval_every_steps (and the checkpoint period).",
)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", None, "Overrides config.train.optimizer.learning_rate."
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Overrides config.train.batch_size."
)
_NUM_FILTERS = flags.DEFINE_list(
    "num_filters", None,
    "Filters of each block (default: the paper's 64,64,64).",
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory of the runs (one model_dir per cell)."
)
_RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "Where the tables and plots go (default: output_dir)."
)
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Cells trained at the same time.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Cluster fan-out: tasks.")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "Cluster fan-out: this task.")
_AGGREGATE_ONLY = flags.DEFINE_bool(
    "aggregate_only", False, "Only aggregate the finished cells of output_dir."
)
flags.mark_flags_as_required(["output_dir"])


def _ints(name, values):
    if values is None:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{name} expects integers, received {values}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    smoke_test = _PRESET.value == "quick"
    if smoke_test:
        print(experiments.SMOKE_TEST_NOTE, flush=True)
    if not _AGGREGATE_ONLY.value:
        try:
            grid = experiments.get_grid(
                _DATASET.value, _PRESET.value,
                layer_types=_LAYER_TYPES.value,
                positions=_ints("positions", _POSITIONS.value),
                ranks=_ints("ranks", _RANKS.value),
                seeds=_ints("seeds", _SEEDS.value),
                train_overrides={
                    field: flag.value
                    for field, flag in (
                        ("train_steps", _TRAIN_STEPS),
                        ("eval_every_steps", _EVAL_EVERY_STEPS),
                        ("optimizer.learning_rate", _LEARNING_RATE),
                        ("batch_size", _BATCH_SIZE),
                    )
                    if flag.value is not None
                },
                model_overrides=(
                    None if _NUM_FILTERS.value is None
                    else {"num_filters": _ints("num_filters", _NUM_FILTERS.value)}
                ),
            )
            report = experiments.run_grid(
                grid, _OUTPUT_DIR.value, data_dir=_DATA_DIR.value,
                parallel=_PARALLEL.value, num_shards=_NUM_SHARDS.value,
                shard_index=_SHARD_INDEX.value,
            )
        except (TypeError, ValueError) as error:
            sys.exit(f"error: {error}")
        logging.info(
            "Cells finished: %d, skipped (done before): %d, failed: %d.",
            len(report.finished), len(report.skipped), len(report.failed),
        )
        for name, message in report.failed.items():
            logging.error("Failed: %s: %s", name, message)
    try:
        results = experiments.aggregate(_OUTPUT_DIR.value, _RESULTS_DIR.value)
    except ValueError as error:
        sys.exit(f"error: {error}")
    for path in results["files"]:
        print(path)
    if smoke_test:
        print(experiments.SMOKE_TEST_NOTE)
    if not _AGGREGATE_ONLY.value and report.failed:
        sys.exit(1)


if __name__ == "__main__":
    _cli.run(main)

r"""Runs the paper's experiment grid and aggregates it into tables and plots.

Every cell (layer type × block position × rank × seed) is a trainer run in
`<output_dir>/<dataset>/<cell>`; a cell in another precision than float32 has
a suffix (`lrlc_pos2_rank4_seed0_bf16`). The data is checked once before any
cell starts. Finished cells are skipped, interrupted ones resume: Ctrl-C or
SIGTERM stops the grid and its workers (exit status 130 or 143), and the same
command resumes it. A progress line after each cell gives the cells done and
left, the time elapsed and an estimate of the time left. The results
(results.csv, results.json, results.md and accuracy_vs_rank_<dataset>.png) are
written to `--results_dir` (default `--output_dir`).

Examples:

    # A smoke test: a tiny grid on the embedded MNIST subset (minutes on 2
    # CPU cores); it checks that everything runs, its numbers are no result.
    lrlc-reproduce --scale=quick --output_dir=runs/quick

    # The MNIST grid of docs/results (layer position 2, its CPU-sized recipe),
    # on real MNIST in a prepared TFDS data_dir; docs/results/README.md has
    # its translated-MNIST and rank-16 commands too.
    lrlc-reproduce --dataset=mnist \
        --data_dir=$HOME/tensorflow_datasets --positions=2 --ranks=1,2,4,8 \
        --seeds=0,1,2 --num_filters=32,32,32 --learning_rate=0.03 \
        --train_steps=250 --eval_every_steps=125 --parallel=2 \
        --output_dir=runs/paper

    # The same grid in mixed bfloat16: its cells (..._bf16) sit beside the
    # float32 ones, and the tables and plots keep the precisions apart.
    lrlc-reproduce --dataset=mnist \
        --data_dir=$HOME/tensorflow_datasets --positions=2 --ranks=1,2,4,8 \
        --seeds=0,1,2 --num_filters=32,32,32 --learning_rate=0.03 \
        --train_steps=250 --eval_every_steps=125 --parallel=2 \
        --mixed_precision=mixed_bfloat16 --output_dir=runs/paper

    # Cluster fan-out: task i of N runs every N-th cell of a shared folder,
    # then one aggregation.
    lrlc-reproduce --dataset=cifar10 --num_shards=N \
        --shard_index=i --output_dir=<shared folder>
    lrlc-reproduce --dataset=cifar10 --aggregate_only \
        --output_dir=<shared folder>

    # A grid continued on another machine (its cells in runs/paper_more):
    # the results of both, the new cells replacing the earlier runs of theirs.
    lrlc-reproduce --dataset=mnist --aggregate_only --output_dir=runs/paper_more \
        --results_dir=runs/paper --merge_results=runs/paper/results.json

Exit status: 0 when every cell finished; 1 with a one-line `error:` message
for invalid flags, missing data or a finished cell of another experiment in
`--output_dir`, and 1 after the aggregation when a cell failed (its traceback
is in its train.log); 130 / 143 when stopped by SIGINT / SIGTERM.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from low_rank_local_connectivity import data
from low_rank_local_connectivity import experiments
from low_rank_local_connectivity.cli import startup

_SCALE = flags.DEFINE_enum(
    "scale", "paper", experiments.SCALES,
    "'paper': the grid of --dataset; 'quick': a smoke test, a tiny grid on mnist_small.",
)
_DATASET = flags.DEFINE_enum(
    "dataset", "mnist", tuple(experiments.GRIDS),
    "Dataset of the grid (ignored with --scale=quick).",
)
_LAYER_TYPES = flags.DEFINE_list(
    "layer_types", None,
    f"Subset of layer types, from {', '.join(experiments.LAYER_TYPES)}.",
)
_POSITIONS = flags.DEFINE_list("positions", None, "Subset of block positions.")
_RANKS = flags.DEFINE_list("ranks", None, "Subset of ranks.")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds.")
# --<flag> overrides config.train.<field> of every cell.
_TRAIN_OVERRIDES = {
    "train_steps": flags.DEFINE_integer(
        "train_steps", None, "Overrides the recipe's config.train.train_steps."),
    "eval_every_steps": flags.DEFINE_integer(
        "eval_every_steps", None,
        "Overrides config.train.eval_every_steps (and the checkpoint period)."),
    "optimizer.learning_rate": flags.DEFINE_float(
        "learning_rate", None, "Overrides config.train.optimizer.learning_rate."),
    "batch_size": flags.DEFINE_integer(
        "batch_size", None, "Overrides config.train.batch_size."),
    "mixed_precision": flags.DEFINE_enum(
        "mixed_precision", None, tuple(experiments.PRECISION_SUFFIXES),
        "Overrides config.train.mixed_precision (default: the recipe's, float32). "
        "Cells of another precision are named with a suffix (_bf16, _fp16)."),
}
_NUM_FILTERS = flags.DEFINE_list(
    "num_filters", None,
    "Filters of each block (default: the paper's 64,64,64).",
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
_DOWNLOAD = flags.DEFINE_bool(
    "download", False,
    "Let TFDS download and prepare missing data (once, before the cells start).",
)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder with the dataset's original files (TFDS manual_dir)."
)
_IDX_DIR = flags.DEFINE_string(
    "idx_dir", None,
    "Folder of MNIST's idx files: mnist and trans_mnist42 through the NumPy "
    "path, without TFDS (what a JAX machine without TensorFlow uses).",
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory of the runs (one model_dir per cell)."
)
_RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "Where the tables and plots go (default: output_dir)."
)
_MERGE_RESULTS = flags.DEFINE_string(
    "merge_results", None,
    "results.json of an earlier aggregation whose runs the results keep (a grid "
    "run in parts on several machines): all but those whose configuration and "
    "seed also finished in output_dir, which replace them.",
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


def _grid():
    return experiments.get_grid(
        _DATASET.value, _SCALE.value,
        layer_types=_LAYER_TYPES.value,
        positions=_ints("positions", _POSITIONS.value),
        ranks=_ints("ranks", _RANKS.value),
        seeds=_ints("seeds", _SEEDS.value),
        train_overrides={
            field: flag.value for field, flag in _TRAIN_OVERRIDES.items()
            if flag.value is not None
        },
        model_overrides=(
            None if _NUM_FILTERS.value is None
            else {"num_filters": _ints("num_filters", _NUM_FILTERS.value)}
        ),
    )


def _run_grid():
    """Runs the grid; the report, or exits with a one-line message."""
    try:
        return experiments.run_grid(
            _grid(), _OUTPUT_DIR.value, data_dir=_DATA_DIR.value,
            download=_DOWNLOAD.value, manual_dir=_MANUAL_DIR.value,
            idx_dir=_IDX_DIR.value, parallel=_PARALLEL.value, num_shards=_NUM_SHARDS.value,
            shard_index=_SHARD_INDEX.value,
        )
    except experiments.GridInterrupted as interrupted:
        print(interrupted, file=sys.stderr, flush=True)
        sys.exit(interrupted.exit_status)
    except data.DataNotFoundError as error:
        sys.exit(f"error: {' '.join(str(error.named_for('--')).split())}")
    except (TypeError, ValueError) as error:
        sys.exit(f"error: {' '.join(str(error).split())}")


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    smoke_test = _SCALE.value == "quick"
    if smoke_test:
        print(experiments.SMOKE_TEST_NOTE, flush=True)
    failed = {}
    if not _AGGREGATE_ONLY.value:
        report = _run_grid()
        failed = report.failed
        logging.info(
            "Cells finished: %d, skipped (done before): %d, failed: %d.",
            len(report.finished), len(report.skipped), len(failed),
        )
        for name, message in failed.items():
            logging.error("Failed: %s: %s", name, message)
    try:
        results = experiments.aggregate(
            _OUTPUT_DIR.value, _RESULTS_DIR.value, merge_results=_MERGE_RESULTS.value)
    except ValueError as error:
        sys.exit(f"error: {error}")
    for path in results["files"]:
        print(path)
    if smoke_test:
        print(experiments.SMOKE_TEST_NOTE)
    if failed:
        sys.exit(1)


def run():
    """The `lrlc-reproduce` command."""
    startup.run(main)

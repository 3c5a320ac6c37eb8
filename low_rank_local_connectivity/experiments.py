"""The paper's experiment grid: declaration, runner, aggregation and plots.

A grid cell is one training run of the simple network (docs/design.md §2) with one
layer type at one block position, one rank and one seed:

- layer types: 'conv', 'wide_conv', 'locally_connected', 'coord_conv', 'lrlc'
  (fixed combining weights, row + column factorised) and
  'lrlc_input_dependent';
- position: the block (1, 2 or 3) whose convolution is replaced. 'conv' and
  'coord_conv' (whose coordinate channels are appended to the image) do not
  depend on it and have `position=None`;
- rank: the LRLC rank K, or the rank a 'wide_conv' layer matches in parameters.
  Layer types without a rank have `rank=None`;
- seed: model initialisation and training data order.

`GRIDS` declares the paper's grid per dataset (with the training recipe of
`configs/experiment.py` for that dataset) and `PRESETS` adds 'quick', a tiny grid
on the embedded `mnist_small` that finishes on 2 CPU cores in minutes.

Each cell is an ordinary `trainer.Trainer` run in its own `model_dir`
(`<output_dir>/<dataset>/<cell name>`). `run_grid` runs cells in `parallel`
worker processes, skips finished cells and resumes interrupted ones (the trainer
restores the latest checkpoint of a `model_dir`). After training, the test split
is evaluated once with the best-validation checkpoint (the trainer's own
`results.json` reports the test metrics of the LAST step; when the best step is
not the last one this module restores `best/` and evaluates it) and written to
`<model_dir>/cell_result.json`.

Hyperparameters are chosen on the validation split only: the training recipe
is fixed per dataset, and the rank of each ranked layer type at each position is
the one with the highest mean validation accuracy over seeds (`select_best_ranks`).
The test accuracy is reported for every cell and for the selected ranks, never
used to select anything.

`aggregate` reads the `cell_result.json` files of an output directory and writes
`results.csv` (one row per run), `results.json` (runs, per-configuration
summaries and the selected ranks), `results.md` (markdown tables: the paper's
layout, layer types × positions, and every configuration) and one PNG per
dataset of accuracy vs rank per position (`plot_accuracy_vs_rank`).
"""

import collections
import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import multiprocessing
import os
import time

from absl import logging
import numpy as np

LAYER_TYPES = (
    "conv",
    "wide_conv",
    "locally_connected",
    "coord_conv",
    "lrlc",
    "lrlc_input_dependent",
)
# Layer types with a rank (LRLC rank, or the rank a wide conv matches).
RANKED_LAYER_TYPES = ("wide_conv", "lrlc", "lrlc_input_dependent")
# Layer types that do not depend on the block position.
POSITIONLESS_LAYER_TYPES = ("conv", "coord_conv")
# Reference lines of the accuracy-vs-rank plots.
REFERENCE_LAYER_TYPES = ("conv", "locally_connected", "coord_conv")

LAYER_LABELS = {
    "conv": "Conv",
    "wide_conv": "Wide conv",
    "locally_connected": "Locally connected",
    "coord_conv": "CoordConv",
    "lrlc": "LRLC",
    "lrlc_input_dependent": "Input-dependent LRLC",
}
# `models` preset and simple-network layer type of each grid layer type.
_MODEL_PRESETS = {
    "conv": ("conv", "conv2d"),
    "wide_conv": ("wide_conv", "wide_conv2d"),
    "locally_connected": ("lc", "locally_connected2d"),
    "coord_conv": ("coord_conv", "conv2d"),
    "lrlc": ("lrlc", "low_rank_locally_connected2d"),
    "lrlc_input_dependent": (
        "lrlc_input_dependent", "low_rank_locally_connected2d",
    ),
}
NUM_BLOCKS = 3

CELL_RESULT_FILE = "cell_result.json"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CSV_FIELDS = (
    "dataset", "layer_type", "position", "rank", "seed", "num_parameters",
    "train_steps", "best_valid_step", "valid_accuracy", "test_accuracy",
    "test_at_step", "train_seconds", "model_dir",
)


def _check_subset(name, values, allowed):
    if isinstance(values, str) or not all(v in allowed for v in values) or not values:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a non-empty "
            f"sequence of {allowed}. Received: {values!r}"
        )


def _check_ints(name, values, low=None, high=None):
    def ok(v):
        return (
            isinstance(v, (int, np.integer)) and not isinstance(v, bool)
            and (low is None or v >= low) and (high is None or v <= high)
        )

    if isinstance(values, str) or not values or not all(ok(v) for v in values):
        bounds = f" in [{low}, {'∞' if high is None else high}]"
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected integers{bounds}. "
            f"Received: {values!r}"
        )


@dataclasses.dataclass(frozen=True)
class Grid:
    """The experiment grid of one dataset.

    Attributes:
        dataset: str, a `data` dataset name (e.g. 'trans_mnist42').
        recipe: str, the `configs/experiment.py` dataset whose training recipe
            is used (e.g. 'mnist' for 'trans_mnist42').
        layer_types: tuple of `LAYER_TYPES`.
        positions: tuple of block positions in 1..3.
        ranks: tuple of positive ints.
        seeds: tuple of ints.
        train: dict of overrides of the recipe's `config.train`, with dotted
            keys for nested fields (e.g. {'optimizer.learning_rate': 1e-3}).
        model: dict of overrides of the model config (e.g.
            {'num_filters': [32, 32, 32]}); the cell sets `layer_types` and
            `spatial_rank`.
    """

    dataset: str
    recipe: str
    layer_types: tuple = LAYER_TYPES
    positions: tuple = (1, 2, 3)
    ranks: tuple = (1, 2, 4, 8, 16)
    seeds: tuple = (0, 1, 2)
    train: dict = dataclasses.field(default_factory=dict)
    model: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _check_subset("layer_types", self.layer_types, LAYER_TYPES)
        _check_ints("positions", self.positions, low=1, high=NUM_BLOCKS)
        _check_ints("ranks", self.ranks, low=1)
        _check_ints("seeds", self.seeds, low=0)
        for name in ("train", "model"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(
                    f"Invalid type for argument `{name}`. Expected a dict of "
                    f"config.{name} overrides. Received: "
                    f"{type(getattr(self, name)).__name__}"
                )
        reserved = {"layer_types", "spatial_rank"} & set(self.model)
        if reserved:
            raise ValueError(
                f"Invalid value for argument `model`: {sorted(reserved)} are set "
                f"by each cell. Received: {self.model!r}"
            )

    def cells(self):
        """The grid's cells, in a deterministic order (seed varies fastest).

        Position-independent layer types get one cell per seed
        (`position=None`), unranked ones `rank=None`.
        """
        cells = []
        for layer_type in self.layer_types:
            positions = (
                (None,) if layer_type in POSITIONLESS_LAYER_TYPES else self.positions
            )
            ranks = self.ranks if layer_type in RANKED_LAYER_TYPES else (None,)
            for position in positions:
                for rank in ranks:
                    for seed in self.seeds:
                        cells.append(Cell(self.dataset, layer_type, position, rank, seed))
        return cells


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        dataset: str, dataset name.
        layer_type: str, one of `LAYER_TYPES`.
        position: int in 1..3, or None for `POSITIONLESS_LAYER_TYPES`.
        rank: positive int for `RANKED_LAYER_TYPES`, else None.
        seed: int.
    """

    dataset: str
    layer_type: str
    position: object
    rank: object
    seed: int

    def __post_init__(self):
        _check_subset("layer_type", (self.layer_type,), LAYER_TYPES)
        if self.layer_type in POSITIONLESS_LAYER_TYPES:
            if self.position is not None:
                raise ValueError(
                    f"Invalid value for argument `position`. Expected None for "
                    f"layer type {self.layer_type!r} (it does not depend on "
                    f"the block position). Received: {self.position!r}"
                )
        else:
            _check_ints("position", (self.position,), low=1, high=NUM_BLOCKS)
        if self.layer_type in RANKED_LAYER_TYPES:
            _check_ints("rank", (self.rank,), low=1)
        elif self.rank is not None:
            raise ValueError(
                f"Invalid value for argument `rank`. Expected None for layer "
                f"type {self.layer_type!r} (it has no rank). Received: "
                f"{self.rank!r}"
            )
        _check_ints("seed", (self.seed,), low=0)

    @property
    def name(self):
        """Directory name, e.g. 'lrlc_pos2_rank4_seed0' or 'conv_seed1'."""
        parts = [self.layer_type]
        if self.position is not None:
            parts.append(f"pos{self.position}")
        if self.rank is not None:
            parts.append(f"rank{self.rank}")
        parts.append(f"seed{self.seed}")
        return "_".join(parts)

    def model_dir(self, output_dir):
        """The cell's trainer `model_dir` under `output_dir`."""
        return os.path.join(output_dir, self.dataset, self.name)


# Grids of the paper, per dataset. 'trans_mnist42' is the translated-MNIST
# alignment experiment (the translation of docs/design.md §4 applied to MNIST):
# fixed vs input-dependent LRLC with the convolution as reference.
GRIDS = {
    "mnist": Grid("mnist", "mnist"),
    "trans_mnist42": Grid(
        "trans_mnist42", "mnist",
        layer_types=("conv", "lrlc", "lrlc_input_dependent"),
    ),
    "cifar10": Grid("cifar10", "cifar10"),
    "celeba32": Grid("celeba32", "celeba32"),
    "trans_celeba48": Grid("trans_celeba48", "trans_celeba48"),
}

# A grid that finishes on 2 CPU cores in a few minutes (embedded data).
QUICK_GRID = Grid(
    "mnist_small", "mnist_small",
    layer_types=("conv", "locally_connected", "lrlc"),
    positions=(2,),
    ranks=(1, 2),
    seeds=(0, 1),
    train={
        "train_steps": 60, "eval_every_steps": 20, "log_every_steps": 20,
        "checkpoint_every_steps": 20,
        # The locally connected cells' checkpoints are 250 MB each.
        "keep_checkpoints": 1,
    },
)
PRESETS = ("paper", "quick")
# The quick grid checks that everything runs; its numbers are no result.
SMOKE_TEST_DATASETS = (QUICK_GRID.dataset,)
SMOKE_TEST_NOTE = (
    "Smoke test: short runs on the embedded 5,000-image MNIST subset show "
    "that the grid runs end to end; these accuracies do not compare the "
    "layers (the README's tables on real MNIST do)."
)


def get_grid(dataset, preset="paper", *, layer_types=None, positions=None,
             ranks=None, seeds=None, train_overrides=None, model_overrides=None):
    """The grid of a dataset, optionally restricted to a subset.

    Args:
        dataset: str, a key of `GRIDS` with preset 'paper'; ignored (may be
            None) with preset 'quick', which always uses 'mnist_small'.
        preset: 'paper' or 'quick'.
        layer_types, positions, ranks, seeds: optional sequences replacing
            the grid's own.
        train_overrides: optional dict of `config.train` fields (dotted keys
            for nested ones, e.g. 'optimizer.learning_rate') added to the
            grid's own. Setting 'eval_every_steps' also sets
            'checkpoint_every_steps' unless that is given.
        model_overrides: optional dict of model config fields added to the
            grid's own (e.g. {'num_filters': [32, 32, 32]}).

    Returns:
        A `Grid`.

    Raises:
        ValueError: for an unknown preset or dataset, or invalid subsets.
    """
    if preset not in PRESETS:
        raise ValueError(
            f"Invalid value for argument `preset`. Expected one of {PRESETS}. "
            f"Received: {preset!r}"
        )
    if preset == "quick":
        grid = QUICK_GRID
    elif dataset in GRIDS:
        grid = GRIDS[dataset]
    else:
        raise ValueError(
            f"Invalid value for argument `dataset`. Expected one of "
            f"{tuple(GRIDS)}. Received: {dataset!r}"
        )
    replaced = {
        name: tuple(value)
        for name, value in (
            ("layer_types", layer_types), ("positions", positions),
            ("ranks", ranks), ("seeds", seeds),
        )
        if value is not None
    }
    train_overrides = dict(train_overrides or {})
    if "eval_every_steps" in train_overrides:
        train_overrides.setdefault(
            "checkpoint_every_steps", train_overrides["eval_every_steps"]
        )
    train = dict(grid.train, **train_overrides)
    model = dict(grid.model, **(model_overrides or {}))
    return dataclasses.replace(grid, train=train, model=model, **replaced)


def cell_config(cell, grid, *, data_dir=None):
    """The trainer config of a cell.

    Args:
        cell: `Cell`.
        grid: the `Grid` the cell belongs to (recipe and train overrides).
        data_dir: optional str, TFDS data_dir.

    Returns:
        An experiment `ml_collections.ConfigDict` (see
        `configs/experiment.py`): the recipe of `grid.recipe` with the model
        preset of the layer type, the layer placed at `cell.position`,
        `spatial_rank = cell.rank`, `seed = cell.seed` and the grid's train
        and model overrides.

    Raises:
        ValueError: if the cell's dataset is not the grid's.
    """
    # Imported here: the aggregation and plotting do not need TensorFlow.
    from low_rank_local_connectivity.configs import experiment

    if cell.dataset != grid.dataset:
        raise ValueError(
            f"Invalid value for argument `cell`: its dataset {cell.dataset!r} "
            f"is not the grid's ({grid.dataset!r})."
        )
    model_preset, block_type = _MODEL_PRESETS[cell.layer_type]
    config = experiment.get_config(f"{grid.recipe}_{model_preset}")
    config.seed = cell.seed
    config.dataset.name = cell.dataset
    config.dataset.data_dir = data_dir
    layer_types = ["conv2d"] * NUM_BLOCKS
    if cell.position is not None:
        layer_types[cell.position - 1] = block_type
    config.model.update(dict(grid.model))
    config.model.layer_types = layer_types
    config.model.spatial_rank = 1 if cell.rank is None else cell.rank
    config.train.update_from_flattened_dict(dict(grid.train))
    return config


def read_cell_result(model_dir):
    """The `cell_result.json` of a model_dir, or None if the cell is unfinished."""
    path = os.path.join(model_dir, CELL_RESULT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_cell(cell, config, model_dir, num_threads=None):
    """Trains a cell (resuming) and evaluates its best-validation checkpoint.

    Runs in the calling process. Test metrics: the trainer evaluates the last
    step; when the best validation step is the last step those are the test
    metrics of the best checkpoint, otherwise the best checkpoint is restored
    and the test split evaluated. The result is written atomically to
    `<model_dir>/cell_result.json`.

    Args:
        cell: `Cell`.
        config: experiment ConfigDict (`cell_config(cell, ...)`).
        model_dir: str.
        num_threads: optional int, TensorFlow intra-op threads (set before
            anything runs; use it only in a fresh process).

    Returns:
        The cell result dict.
    """
    import tensorflow as tf

    from low_rank_local_connectivity import training
    from low_rank_local_connectivity.training import run_dir

    if num_threads:
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)
    run = training.Trainer(config, model_dir)
    results = None
    if run.step >= config.train.train_steps:
        results = run_dir.read_results(model_dir)
    if results is None or results["train_steps"] != run.step:
        results = run.train_and_evaluate()
    best = results["best_valid"]
    if best["step"] == results["train_steps"]:
        test = results["test"]
    else:
        run.restore("best")
        test = run.evaluate("test")
    cell_result = dict(
        cell=dataclasses.asdict(cell),
        config=json.loads(config.to_json_best_effort()),
        num_parameters=results["num_parameters"],
        train_steps=results["train_steps"],
        best_valid=best,
        test=test,
        test_at_step=best["step"],
        train_seconds=results["train_seconds"],
    )
    _atomic_write_json(os.path.join(model_dir, CELL_RESULT_FILE), cell_result)
    return cell_result


def _cell_worker(cell_dict, config_json, model_dir, num_threads):
    """Entry point of a worker process: one cell, logs to model_dir/train.log."""
    import ml_collections

    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    os.makedirs(model_dir, exist_ok=True)
    log = os.open(
        os.path.join(model_dir, "train.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644,
    )
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config = ml_collections.ConfigDict(json.loads(config_json))
    result = run_cell(Cell(**cell_dict), config, model_dir, num_threads)
    return result["test"]["accuracy"]


def _relative_cost(cell):
    """Rough training cost of a cell, in convolution-network units."""
    if cell.layer_type == "locally_connected":
        return 6.0
    if cell.rank is None:
        return 1.0
    return 1.0 + 0.6 * cell.rank


@dataclasses.dataclass
class GridReport:
    """What `run_grid` did: lists of cell names."""

    finished: list
    skipped: list
    failed: dict  # cell name -> error message


def run_grid(grid, output_dir, *, data_dir=None, parallel=1,
             num_shards=1, shard_index=0):
    """Runs the cells of a grid, each in its own worker process.

    Cells run seed by seed, the most expensive ones of a seed first. A cell
    whose `cell_result.json` exists with the same config is skipped; a
    cell with a different saved config raises (use another `output_dir`); an
    interrupted cell resumes from its latest checkpoint. A failing cell (e.g.
    a NaN loss) is reported and the other cells continue.

    Cluster fan-out: run the same grid on N machines with
    `num_shards=N, shard_index=i` (cell k belongs to shard k mod N) and a
    shared `output_dir`, then `aggregate(output_dir)` once.

    Args:
        grid: `Grid`.
        output_dir: str.
        data_dir: optional str, TFDS data_dir.
        parallel: int >= 1, number of cells trained at the same time. Each
            worker gets max(1, cpu_count // parallel) TensorFlow threads.
        num_shards: int >= 1.
        shard_index: int in [0, num_shards).

    Returns:
        A `GridReport`.

    Raises:
        ValueError: for invalid arguments, or a finished cell whose saved
            config differs from the requested one.
    """
    _check_ints("parallel", (parallel,), low=1)
    _check_ints("num_shards", (num_shards,), low=1)
    _check_ints("shard_index", (shard_index,), low=0, high=num_shards - 1)
    cells = grid.cells()[shard_index::num_shards]
    report = GridReport(finished=[], skipped=[], failed={})
    pending = []
    for cell in cells:
        model_dir = cell.model_dir(output_dir)
        config = cell_config(cell, grid, data_dir=data_dir)
        config_json = config.to_json_best_effort()
        done = read_cell_result(model_dir)
        if done is not None:
            if done["config"] != json.loads(config_json):
                raise ValueError(
                    f"Invalid value for argument `output_dir`: {model_dir} holds "
                    f"a finished run of cell {cell.name} with a different "
                    "config. Use another output_dir (or delete that run)."
                )
            report.skipped.append(cell.name)
            continue
        pending.append((cell, config_json, model_dir))
    # Seed by seed (an interrupted grid then has whole seeds), the most
    # expensive cells of a seed first (fewer idle workers at the end).
    pending.sort(key=lambda item: (item[0].seed, -_relative_cost(item[0])))
    logging.info(
        "%d cells: %d finished before, %d to run with %d in parallel.",
        len(cells), len(report.skipped), len(pending), parallel,
    )
    if not pending:
        return report
    num_threads = max(1, (os.cpu_count() or 1) // parallel)
    context = multiprocessing.get_context("spawn")
    start = time.time()
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=parallel, mp_context=context, max_tasks_per_child=1
    ) as pool:
        futures = {
            pool.submit(
                _cell_worker, dataclasses.asdict(cell), config_json, model_dir,
                num_threads,
            ): cell
            for cell, config_json, model_dir in pending
        }
        for future in concurrent.futures.as_completed(futures):
            cell = futures[future]
            try:
                accuracy = future.result()
            except Exception as error:  # Reported; the other cells go on.
                report.failed[cell.name] = f"{type(error).__name__}: {error}"
                logging.error(
                    "Cell %s failed (log: %s): %s", cell.name,
                    os.path.join(cell.model_dir(output_dir), "train.log"), error,
                )
                continue
            report.finished.append(cell.name)
            logging.info(
                "Cell %s done: test accuracy %.4f (%d/%d, %.0f s elapsed).",
                cell.name, accuracy, len(report.finished) + len(report.failed),
                len(pending), time.time() - start,
            )
    return report


# ----------------------------------------------------------------------------
# Aggregation.


def collect_runs(output_dir):
    """One row per finished cell under `output_dir` (dicts with `CSV_FIELDS`).

    Rows are sorted by dataset, layer type (in `LAYER_TYPES` order), position,
    rank and seed.
    """
    rows = []
    for root, _, files in os.walk(output_dir):
        if CELL_RESULT_FILE not in files:
            continue
        result = read_cell_result(root)
        cell = result["cell"]
        rows.append(dict(
            dataset=cell["dataset"],
            layer_type=cell["layer_type"],
            position=cell["position"],
            rank=cell["rank"],
            seed=cell["seed"],
            num_parameters=result["num_parameters"],
            train_steps=result["train_steps"],
            best_valid_step=result["best_valid"]["step"],
            valid_accuracy=result["best_valid"]["metrics"]["accuracy"],
            test_accuracy=result["test"]["accuracy"],
            test_at_step=result["test_at_step"],
            train_seconds=result["train_seconds"],
            model_dir=os.path.relpath(root, output_dir),
        ))
    rows.sort(key=_sort_key)
    return rows


def _sort_key(row):
    return (
        row["dataset"], LAYER_TYPES.index(row["layer_type"]),
        -1 if row["position"] is None else row["position"],
        -1 if row["rank"] is None else row["rank"],
        row.get("seed", -1),
    )


def mean_and_standard_error(values):
    """Mean and standard error of the mean (sample std / sqrt(n)).

    Args:
        values: non-empty sequence of floats.

    Returns:
        (mean, standard error); the standard error is NaN for one value.

    Raises:
        ValueError: if `values` is empty.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("Invalid value for argument `values`: it is empty.")
    if values.size == 1:
        return float(values[0]), math.nan
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def summarize(rows):
    """Groups runs over seeds: one summary per (dataset, layer type, position, rank).

    Args:
        rows: run rows (see `collect_runs`).

    Returns:
        List of dicts with dataset, layer_type, position, rank, num_seeds,
        seeds, num_parameters, valid_mean, valid_se, test_mean, test_se (in
        `_sort_key` order).

    Raises:
        ValueError: if runs of one group have different parameter counts.
    """
    groups = collections.defaultdict(list)
    for row in rows:
        key = (row["dataset"], row["layer_type"], row["position"], row["rank"])
        groups[key].append(row)
    summaries = []
    for (dataset, layer_type, position, rank), runs in groups.items():
        params = {run["num_parameters"] for run in runs}
        if len(params) != 1:
            raise ValueError(
                f"Runs of {layer_type} (position {position}, rank {rank}) on "
                f"{dataset} have different parameter counts: {sorted(params)}"
            )
        valid_mean, valid_se = mean_and_standard_error(
            [run["valid_accuracy"] for run in runs]
        )
        test_mean, test_se = mean_and_standard_error(
            [run["test_accuracy"] for run in runs]
        )
        summaries.append(dict(
            dataset=dataset, layer_type=layer_type, position=position,
            rank=rank, num_seeds=len(runs),
            seeds=sorted(run["seed"] for run in runs),
            num_parameters=params.pop(),
            valid_mean=valid_mean, valid_se=valid_se,
            test_mean=test_mean, test_se=test_se,
        ))
    summaries.sort(key=_sort_key)
    return summaries


def select_best_ranks(summaries):
    """Chooses the rank of each ranked layer type and position on validation.

    Args:
        summaries: output of `summarize`.

    Returns:
        List of the summaries kept for the paper-style table: every unranked
        configuration, and for each (dataset, ranked layer type, position) the
        rank with the highest mean validation accuracy (ties: the smaller
        rank). Test accuracy plays no part in the choice.
    """
    best = {}
    for summary in summaries:
        key = (summary["dataset"], summary["layer_type"], summary["position"])
        current = best.get(key)
        if current is None or summary["valid_mean"] > current["valid_mean"]:
            best[key] = summary
    return sorted(best.values(), key=_sort_key)


def _format_accuracy(mean, se):
    text = f"{100 * mean:.2f}"
    return text if math.isnan(se) else f"{text} ± {100 * se:.2f}"


def _markdown(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(cell) for cell in line) + " |" for line in lines]
    return "\n".join(out)


def paper_table(selected, dataset):
    """Markdown table in the paper's layout for one dataset.

    Rows are layer types, columns block positions; an entry is the test
    accuracy (%) mean ± standard error over seeds at the best-validation
    checkpoint, the validation-selected rank as `K=...` and the trainable
    parameter count. Position-independent layer types repeat their value in
    every column.

    Args:
        selected: output of `select_best_ranks`.
        dataset: str.

    Returns:
        The markdown table (str), or '' when there are no runs of `dataset`.
    """
    rows = [s for s in selected if s["dataset"] == dataset]
    if not rows:
        return ""
    positions = sorted({s["position"] for s in rows if s["position"] is not None})
    if not positions:
        positions = [None]
    header = ["Layer"] + [
        "any position" if p is None else f"position {p}" for p in positions
    ]
    lines = []
    for layer_type in LAYER_TYPES:
        entries = {s["position"]: s for s in rows if s["layer_type"] == layer_type}
        if not entries:
            continue
        line = [LAYER_LABELS[layer_type]]
        for position in positions:
            summary = entries.get(position, entries.get(None))
            if summary is None:
                line.append("—")
                continue
            text = _format_accuracy(summary["test_mean"], summary["test_se"])
            if summary["rank"] is not None:
                text += f" (K={summary['rank']})"
            line.append(f"{text}<br>{summary['num_parameters']:,} params")
        lines.append(line)
    return _markdown(header, lines)


def full_table(summaries, dataset):
    """Markdown table of every configuration of one dataset ('' if none)."""
    rows = [s for s in summaries if s["dataset"] == dataset]
    if not rows:
        return ""
    header = [
        "Layer", "Position", "Rank", "Test acc. (%)", "Valid acc. (%)",
        "Params", "Seeds",
    ]
    lines = [
        [
            LAYER_LABELS[s["layer_type"]],
            "any" if s["position"] is None else s["position"],
            "—" if s["rank"] is None else s["rank"],
            _format_accuracy(s["test_mean"], s["test_se"]),
            _format_accuracy(s["valid_mean"], s["valid_se"]),
            f"{s['num_parameters']:,}",
            s["num_seeds"],
        ]
        for s in rows
    ]
    return _markdown(header, lines)


def render_markdown(summaries, selected):
    """The results.md text: per dataset, the paper-style and the full table."""
    parts = []
    for dataset in sorted({s["dataset"] for s in summaries}):
        smoke = dataset in SMOKE_TEST_DATASETS
        parts += [
            f"## {dataset}" + (" (smoke test, not a result)" if smoke else ""),
            "",
            *([SMOKE_TEST_NOTE, ""] if smoke else []),
            "Test accuracy (%) at the best-validation checkpoint, mean ± "
            "standard error over seeds; ranks (K) chosen on validation "
            "accuracy.",
            "",
            paper_table(selected, dataset),
            "",
            "All configurations:",
            "",
            full_table(summaries, dataset),
            "",
        ]
    return "\n".join(parts)


def plot_accuracy_vs_rank(summaries, dataset, path):
    """Saves a PNG of test accuracy vs rank, one panel per block position.

    Ranked layer types are lines with standard-error bars; conv, locally
    connected and CoordConv are horizontal reference lines with a shaded
    standard-error band.

    Args:
        summaries: output of `summarize`.
        dataset: str.
        path: str, the PNG file to write.

    Returns:
        True if a figure was written, False when the dataset has no run at a
        block position.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [s for s in summaries if s["dataset"] == dataset]
    positions = sorted({s["position"] for s in rows if s["position"] is not None})
    if not positions:
        return False
    ranks = sorted({s["rank"] for s in rows if s["rank"] is not None}) or [1]
    figure, axes = plt.subplots(
        1, len(positions), figsize=(max(6.5, 4.5 * len(positions)), 4.2),
        squeeze=False, sharey=True,
    )
    colors = dict(zip(LAYER_TYPES, plt.get_cmap("tab10").colors))
    for axis, position in zip(axes[0], positions):
        for layer_type in RANKED_LAYER_TYPES:
            points = sorted(
                (s["rank"], s) for s in rows
                if s["layer_type"] == layer_type and s["position"] == position
            )
            if not points:
                continue
            axis.errorbar(
                [rank for rank, _ in points],
                [100 * s["test_mean"] for _, s in points],
                yerr=[100 * _zero_if_nan(s["test_se"]) for _, s in points],
                marker="o", capsize=3, color=colors[layer_type],
                label=LAYER_LABELS[layer_type],
            )
        for layer_type in REFERENCE_LAYER_TYPES:
            matches = [
                s for s in rows if s["layer_type"] == layer_type
                and s["position"] in (position, None)
            ]
            if not matches:
                continue
            summary = matches[0]
            mean = 100 * summary["test_mean"]
            se = 100 * _zero_if_nan(summary["test_se"])
            axis.axhline(mean, color=colors[layer_type], linestyle="--",
                         label=LAYER_LABELS[layer_type])
            axis.axhspan(mean - se, mean + se, color=colors[layer_type], alpha=0.15)
        axis.set_xscale("log", base=2)
        axis.set_xticks(ranks)
        axis.set_xticklabels([str(rank) for rank in ranks])
        axis.set_xlabel("rank K")
        axis.set_title(
            f"{dataset}: layer at position {position}"
            + (" (smoke test)" if dataset in SMOKE_TEST_DATASETS else "")
        )
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for axis in axes[0][1:]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    columns = 3 if len(positions) == 1 else 6
    figure.legend(handles, labels, loc="lower center",
                  ncol=min(len(labels), columns), fontsize="small", frameon=False)
    figure.tight_layout(rect=(0, 0.17, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _zero_if_nan(value):
    return 0.0 if math.isnan(value) else value


def aggregate(output_dir, results_dir=None):
    """Writes results.csv / results.json / results.md and the rank plots.

    Args:
        output_dir: str, the `run_grid` output directory to read.
        results_dir: str, where to write (default: `output_dir`).

    Returns:
        dict with 'runs', 'summaries', 'selected' and 'files' (paths written).

    Raises:
        ValueError: if `output_dir` holds no finished cell.
    """
    rows = collect_runs(output_dir)
    if not rows:
        raise ValueError(
            f"Invalid value for argument `output_dir`: no {CELL_RESULT_FILE} "
            f"found under {output_dir!r}."
        )
    results_dir = results_dir or output_dir
    os.makedirs(results_dir, exist_ok=True)
    summaries = summarize(rows)
    selected = select_best_ranks(summaries)
    files = []

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_FIELDS})
    files.append(_atomic_write(os.path.join(results_dir, RESULTS_CSV), buffer.getvalue()))
    files.append(_atomic_write_json(
        os.path.join(results_dir, RESULTS_JSON),
        dict(runs=rows, summaries=_json_safe(summaries),
             selected=_json_safe(selected)),
    ))
    files.append(_atomic_write(
        os.path.join(results_dir, RESULTS_MD), render_markdown(summaries, selected)
    ))
    for dataset in sorted({row["dataset"] for row in rows}):
        path = os.path.join(results_dir, f"accuracy_vs_rank_{dataset}.png")
        if plot_accuracy_vs_rank(summaries, dataset, path):
            files.append(path)
    return dict(runs=rows, summaries=summaries, selected=selected, files=files)


def _json_safe(summaries):
    """NaN (one seed) standard errors as null."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v
         for k, v in s.items()}
        for s in summaries
    ]


# ----------------------------------------------------------------------------
# Helpers.


def _atomic_write(path, text):
    from low_rank_local_connectivity.training import run_dir

    return run_dir.atomic_write_text(path, text)


def _atomic_write_json(path, value):
    return _atomic_write(path, json.dumps(value, indent=2) + "\n")

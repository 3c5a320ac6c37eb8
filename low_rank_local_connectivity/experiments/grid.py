"""The declaration of the paper's experiment grid: grids, cells and their configs.

A grid cell is one training run of the simple network (docs/design.md §2) with one
layer type at one block position, one rank, one seed and one precision:

- layer types: 'conv', 'wide_conv', 'locally_connected', 'coord_conv', 'lrlc'
  (fixed combining weights, row + column factorised) and
  'lrlc_input_dependent';
- position: the block (1, 2 or 3) whose convolution is replaced. 'conv' and
  'coord_conv' (whose coordinate channels are appended to the image) do not
  depend on it and have `position=None`;
- rank: the LRLC rank K, or the rank a 'wide_conv' layer matches in parameters.
  Layer types without a rank have `rank=None`;
- seed: model initialisation and training data order;
- precision: the trainer's `train.mixed_precision` ('float32' by default). A
  float32 and a bfloat16 run of the same cell are different configurations,
  as are runs of the same cell at different learning rates (reports keep
  each (precision, learning rate) setting apart: `settings_of`).

`GRIDS` declares the paper's grid per dataset (with the training recipe of
`configs/experiment.py` for that dataset) and `SCALES` adds 'quick', a tiny grid
on the embedded `mnist_small` that finishes on 2 CPU cores in minutes.
"""

import dataclasses
import os

from low_rank_local_connectivity import validation
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.models import layer_types as layer_types_lib

# The layer types of the grid: the registry of `models.layer_types`.
LAYER_TYPES = layer_types_lib.NAMES
# Layer types with a rank (LRLC rank, or the rank a wide conv matches).
RANKED_LAYER_TYPES = layer_types_lib.RANKED
# Layer types that do not depend on the block position.
POSITIONLESS_LAYER_TYPES = layer_types_lib.POSITIONLESS
LAYER_LABELS = layer_types_lib.LABELS
NUM_BLOCKS = layer_types_lib.NUM_BLOCKS

# The trainer's precisions (`train.mixed_precision`), in report order, and the
# suffix of a cell's directory name. float32 has none, so the directories of
# grids that predate the precision field are still found.
PRECISION_SUFFIXES = {
    "float32": "",
    "mixed_bfloat16": "_bf16",
    "mixed_float16": "_fp16",
}
DEFAULT_PRECISION = "float32"


def report_order(row):
    """Sort key of runs, summaries and parity pairs in reports: dataset,
    precision, learning rate, layer type (`LAYER_TYPES` order), position, rank,
    seed."""
    return (
        row["dataset"], list(PRECISION_SUFFIXES).index(row["precision"]),
        row["learning_rate"], LAYER_TYPES.index(row["layer_type"]),
        -1 if row["position"] is None else row["position"],
        -1 if row["rank"] is None else row["rank"],
        row.get("seed", -1),
    )


def settings_of(rows, dataset):
    """The settings of a dataset's runs or summaries, in report order.

    A setting is a (precision, learning rate) pair: the runs of one setting are
    compared with each other in a table or a row of plot panels, those of
    different settings never (a learning-rate sweep runs one output_dir per
    learning rate; `report.aggregate` merges them).
    """
    found = {(r["precision"], r["learning_rate"]) for r in rows if r["dataset"] == dataset}
    return sorted(found, key=lambda s: (list(PRECISION_SUFFIXES).index(s[0]), s[1]))


def setting_label(setting, settings):
    """What tells `setting` apart from the others of `settings`: its precision
    and/or learning rate where they differ (e.g. 'mixed_bfloat16, learning
    rate 0.003'), '' for a dataset of one setting."""
    precision, learning_rate = setting
    parts = []
    if len({p for p, _ in settings}) > 1:
        parts.append(precision)
    if len({lr for _, lr in settings}) > 1:
        parts.append(f"learning rate {learning_rate:g}")
    return ", ".join(parts)


def _check_subset(name, values, allowed):
    if isinstance(values, str) or not values or not all(v in allowed for v in values):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a non-empty "
            f"sequence of {allowed}. Received: {values!r}"
        )


def _check_ints(name, values, low=None, high=None):
    def ok(v):
        return (
            validation.is_int(v)
            and (low is None or v >= low) and (high is None or v <= high)
        )

    if isinstance(values, str) or not values or not all(ok(v) for v in values):
        bounds = f" in [{low}, {'∞' if high is None else high}]"
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected integers{bounds}. "
            f"Received: {values!r}"
        )


def _check_precision(precision, name="precision"):
    if precision not in PRECISION_SUFFIXES:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected one of "
            f"{tuple(PRECISION_SUFFIXES)}. Received: {precision!r}"
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
            Its 'mixed_precision' (default 'float32') is the cells' precision.
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
        _check_precision(self.precision, "train['mixed_precision']")

    @property
    def precision(self):
        """The cells' `train.mixed_precision`."""
        return self.train.get("mixed_precision", DEFAULT_PRECISION)

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
                        cells.append(Cell(
                            self.dataset, layer_type, position, rank, seed,
                            self.precision,
                        ))
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
        precision: str, a key of `PRECISION_SUFFIXES` (`train.mixed_precision`).
    """

    dataset: str
    layer_type: str
    position: object
    rank: object
    seed: int
    precision: str = DEFAULT_PRECISION

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
        _check_precision(self.precision)

    @property
    def name(self):
        """Directory name, e.g. 'lrlc_pos2_rank4_seed0', 'conv_seed1_bf16'."""
        parts = [self.layer_type]
        if self.position is not None:
            parts.append(f"pos{self.position}")
        if self.rank is not None:
            parts.append(f"rank{self.rank}")
        parts.append(f"seed{self.seed}")
        return "_".join(parts) + PRECISION_SUFFIXES[self.precision]

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
SCALES = ("paper", "quick")
# The quick grid checks that everything runs; its numbers are no result.
SMOKE_TEST_DATASETS = (QUICK_GRID.dataset,)
SMOKE_TEST_NOTE = (
    "Smoke test: short runs on the embedded 5,000-image MNIST subset show "
    "that the grid runs end to end; these accuracies do not compare the "
    "layers (the README's tables on real MNIST do)."
)


def get_grid(dataset, scale="paper", *, layer_types=None, positions=None,
             ranks=None, seeds=None, train_overrides=None, model_overrides=None):
    """The grid of a dataset, optionally restricted to a subset.

    Args:
        dataset: str, a key of `GRIDS` at scale 'paper'; ignored (may be
            None) at scale 'quick', which always uses 'mnist_small'.
        scale: 'paper' (the paper's grid of `dataset`) or 'quick' (a smoke
            test on the embedded data).
        layer_types, positions, ranks, seeds: optional sequences replacing
            the grid's own.
        train_overrides: optional dict of `config.train` fields (dotted keys
            for nested ones, e.g. 'optimizer.learning_rate'; 'mixed_precision'
            sets the cells' precision) added to the grid's own. Setting
            'eval_every_steps' also sets 'checkpoint_every_steps' unless that
            is given.
        model_overrides: optional dict of model config fields added to the
            grid's own (e.g. {'num_filters': [32, 32, 32]}).

    Returns:
        A `Grid`.

    Raises:
        ValueError: for an unknown scale, dataset or precision, or invalid
            subsets.
    """
    if scale not in SCALES:
        raise ValueError(
            f"Invalid value for argument `scale`. Expected one of {SCALES}. "
            f"Received: scale={scale!r}"
        )
    if scale == "quick":
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


def cell_config(cell, grid, *, data_dir=None, download=False, manual_dir=None,
                idx_dir=None):
    """The trainer config of a cell.

    Args:
        cell: `Cell`.
        grid: the `Grid` the cell belongs to (recipe and train overrides).
        data_dir: optional str, TFDS data_dir.
        download: bool, let TFDS download and prepare missing data.
        manual_dir: optional str, folder with the dataset's original files.
        idx_dir: optional str, folder of MNIST's idx files (MNIST and
            translated MNIST without TFDS or TensorFlow).

    Returns:
        An experiment `ml_collections.ConfigDict` (see
        `configs/experiment.py`): the recipe of `grid.recipe` with the model
        of the layer type, the layer placed at `cell.position`,
        `spatial_rank = cell.rank`, `seed = cell.seed`, the grid's train and
        model overrides and `train.mixed_precision = cell.precision`.

    Raises:
        ValueError: if the cell's dataset or precision is not the grid's.
    """
    if (cell.dataset, cell.precision) != (grid.dataset, grid.precision):
        raise ValueError(
            f"Invalid value for argument `cell`: its dataset and precision "
            f"{(cell.dataset, cell.precision)!r} are not the grid's "
            f"({(grid.dataset, grid.precision)!r})."
        )
    config = experiment.get_config(f"{grid.recipe}_{cell.layer_type}")
    config.seed = cell.seed
    config.dataset.update(
        name=cell.dataset, data_dir=data_dir, download=download,
        manual_dir=manual_dir, idx_dir=idx_dir,
    )
    config.model.update(dict(grid.model))
    config.model.update(layer_types_lib.get(cell.layer_type).network_fields(
        cell.position, 1 if cell.rank is None else cell.rank))
    config.train.update_from_flattened_dict(dict(grid.train))
    config.train.mixed_precision = cell.precision
    return config

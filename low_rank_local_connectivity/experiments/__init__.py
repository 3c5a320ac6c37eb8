"""The paper's experiment grid: declaration, runner, aggregation and figures.

- `grid.py`: what a grid and its cells are (`Grid`, `Cell`, `GRIDS`,
  `QUICK_GRID`, `get_grid`) and the trainer config of a cell (`cell_config`);
- `runner.py`: training cells (`run_cell`, `run_grid`), skipping finished ones
  and resuming interrupted ones;
- `workers.py`: the worker processes, stopped together on SIGINT / SIGTERM
  (`GridInterrupted`);
- `report.py`: reading finished cells (`collect_runs`), summaries over seeds,
  the validation-selected ranks, results.csv / results.json / results.md
  (`aggregate`, `write_results`), the markdown table and the atomic writers
  (also used by `finetuning`);
- `figures.py`: the accuracy-vs-rank figure;
- `parity.py`: the paired difference of configurations run in float32 and a
  lower precision (`precision_pairs`), a table of results.md;
- `comparisons.py`: each setting's validation-chosen fixed LRLC against its
  other configurations (`lrlc_comparisons`), a table of results.md;
- `stats.py`: mean ± standard error over seeds and whether a difference is
  separable from zero (also used by `finetuning`).

The names below are the package's public API (`experiments.run_grid`, ...).
"""

from low_rank_local_connectivity.experiments.comparisons import lrlc_comparisons
from low_rank_local_connectivity.experiments.figures import REFERENCE_LAYER_TYPES
from low_rank_local_connectivity.experiments.figures import accuracy_vs_rank_figure
from low_rank_local_connectivity.experiments.figures import plot_accuracy_vs_rank
from low_rank_local_connectivity.experiments.grid import GRIDS
from low_rank_local_connectivity.experiments.grid import LAYER_LABELS
from low_rank_local_connectivity.experiments.grid import LAYER_TYPES
from low_rank_local_connectivity.experiments.grid import NUM_BLOCKS
from low_rank_local_connectivity.experiments.grid import POSITIONLESS_LAYER_TYPES
from low_rank_local_connectivity.experiments.grid import PRECISION_SUFFIXES
from low_rank_local_connectivity.experiments.grid import SCALES
from low_rank_local_connectivity.experiments.grid import QUICK_GRID
from low_rank_local_connectivity.experiments.grid import RANKED_LAYER_TYPES
from low_rank_local_connectivity.experiments.grid import SMOKE_TEST_DATASETS
from low_rank_local_connectivity.experiments.grid import SMOKE_TEST_NOTE
from low_rank_local_connectivity.experiments.grid import Cell
from low_rank_local_connectivity.experiments.grid import Grid
from low_rank_local_connectivity.experiments.grid import cell_config
from low_rank_local_connectivity.experiments.grid import get_grid
from low_rank_local_connectivity.experiments.parity import precision_pairs
from low_rank_local_connectivity.experiments.report import CELL_RESULT_FILE
from low_rank_local_connectivity.experiments.report import CSV_FIELDS
from low_rank_local_connectivity.experiments.report import RESULTS_CSV
from low_rank_local_connectivity.experiments.report import RESULTS_JSON
from low_rank_local_connectivity.experiments.report import RESULTS_MD
from low_rank_local_connectivity.experiments.report import aggregate
from low_rank_local_connectivity.experiments.report import collect_runs
from low_rank_local_connectivity.experiments.report import full_table
from low_rank_local_connectivity.experiments.report import paper_table
from low_rank_local_connectivity.experiments.report import read_cell_result
from low_rank_local_connectivity.experiments.report import render_markdown
from low_rank_local_connectivity.experiments.report import select_best_ranks
from low_rank_local_connectivity.experiments.report import summarize
from low_rank_local_connectivity.experiments.report import write_results
from low_rank_local_connectivity.experiments.runner import GridReport
from low_rank_local_connectivity.experiments.runner import experiment_differences
from low_rank_local_connectivity.experiments.runner import run_cell
from low_rank_local_connectivity.experiments.runner import run_grid
from low_rank_local_connectivity.experiments.stats import format_accuracy
from low_rank_local_connectivity.experiments.stats import mean_and_standard_error
from low_rank_local_connectivity.experiments.stats import separability
from low_rank_local_connectivity.experiments.workers import GridInterrupted

__all__ = [
    "lrlc_comparisons",
    "REFERENCE_LAYER_TYPES",
    "accuracy_vs_rank_figure",
    "plot_accuracy_vs_rank",
    "GRIDS",
    "LAYER_LABELS",
    "LAYER_TYPES",
    "NUM_BLOCKS",
    "POSITIONLESS_LAYER_TYPES",
    "PRECISION_SUFFIXES",
    "SCALES",
    "QUICK_GRID",
    "RANKED_LAYER_TYPES",
    "SMOKE_TEST_DATASETS",
    "SMOKE_TEST_NOTE",
    "Cell",
    "Grid",
    "cell_config",
    "get_grid",
    "precision_pairs",
    "CELL_RESULT_FILE",
    "CSV_FIELDS",
    "RESULTS_CSV",
    "RESULTS_JSON",
    "RESULTS_MD",
    "aggregate",
    "collect_runs",
    "full_table",
    "mean_and_standard_error",
    "separability",
    "paper_table",
    "read_cell_result",
    "render_markdown",
    "select_best_ranks",
    "summarize",
    "write_results",
    "GridInterrupted",
    "GridReport",
    "experiment_differences",
    "run_cell",
    "run_grid",
    "format_accuracy",
    "mean_and_standard_error",
    "separability",
]

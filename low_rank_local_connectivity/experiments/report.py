"""Aggregation of finished grid cells: runs, summaries, selected ranks, tables.

Hyperparameters are chosen on the validation split only: the training recipe
is fixed per dataset, and the rank of each ranked layer type at each position is
the one with the highest mean validation accuracy over seeds (`select_best_ranks`).
The test accuracy is reported for every cell and for the selected ranks, never
used to select anything.

`aggregate` reads the `cell_result.json` files of an output directory (and
keeps the runs of an earlier aggregation's `results.json`, for a grid whose
cells ran on several machines) and `write_results` writes `results.csv` (one
row per run, `CSV_FIELDS`), `results.json` (runs, per-configuration summaries and the selected ranks),
`results.md` (markdown tables: the paper's layout, layer types × positions, and
every configuration) and one PNG per dataset of accuracy vs rank per position
(`figures.plot_accuracy_vs_rank`). A configuration is a dataset, precision,
learning rate, layer type, position and rank; a dataset with runs in several
settings (precision and learning rate, `grid.settings_of`) gets one section of
tables per setting, and the configurations run in float32 and a lower precision
with the same seeds a precision parity table (`parity`); each setting's
validation-chosen fixed LRLC is compared with its other configurations
(`comparisons`).

The markdown table and the atomic writers are shared with `finetuning`.
"""

import collections
import csv
import io
import json
import math
import os

from low_rank_local_connectivity.experiments import comparisons
from low_rank_local_connectivity.experiments import figures
from low_rank_local_connectivity.experiments import grid as grid_lib
from low_rank_local_connectivity.experiments import parity
from low_rank_local_connectivity.experiments import stats
from low_rank_local_connectivity.training import run_dir

# What `runner.run_cell` writes in a cell's model_dir when the cell is finished.
CELL_RESULT_FILE = "cell_result.json"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CSV_FIELDS = (
    "dataset", "layer_type", "position", "rank", "seed", "precision",
    "num_filters", "train_steps", "batch_size", "learning_rate",
    "backend", "device", "cpu_count",
    "num_parameters", "best_valid_step", "valid_accuracy", "test_accuracy",
    "test_at_step", "train_seconds", "model_dir",
)
# What a row says for a cell_result.json written before cells recorded where
# they ran: every earlier grid ran on TensorFlow, on CPUs.
DEFAULT_BACKEND = "tensorflow"
DEFAULT_DEVICE = "cpu"
# The training recipe of a run; all runs of a configuration share it.
RECIPE_FIELDS = ("num_filters", "train_steps", "batch_size", "learning_rate")


def run_row(result, model_dir):
    """The `CSV_FIELDS` row of a `cell_result.json`.

    The precision, filters, batch size and learning rate come from the cell's
    saved config (`train.mixed_precision`, `model.num_filters`,
    `train.batch_size`, `train.optimizer.learning_rate`). Results written
    before cells recorded their backend, device and CPU count say backend
    'tensorflow' (`DEFAULT_BACKEND`), device 'cpu' (`DEFAULT_DEVICE`) and no
    CPU count (None).

    Args:
        result: dict, a `cell_result.json`.
        model_dir: str, the cell's model_dir relative to the output directory.
    """
    cell, config = result["cell"], result["config"]
    train = config["train"]
    return dict(
        dataset=cell["dataset"],
        layer_type=cell["layer_type"],
        position=cell["position"],
        rank=cell["rank"],
        seed=cell["seed"],
        precision=train["mixed_precision"],
        num_filters=list(config["model"]["num_filters"]),
        train_steps=result["train_steps"],
        batch_size=train["batch_size"],
        learning_rate=train["optimizer"]["learning_rate"],
        backend=result.get("backend", DEFAULT_BACKEND),
        device=result.get("device", DEFAULT_DEVICE),
        cpu_count=result.get("cpu_count"),
        num_parameters=result["num_parameters"],
        best_valid_step=result["best_valid"]["step"],
        valid_accuracy=result["best_valid"]["metrics"]["accuracy"],
        test_accuracy=result["test"]["accuracy"],
        test_at_step=result["test_at_step"],
        train_seconds=result["train_seconds"],
        model_dir=model_dir,
    )


def read_cell_result(model_dir):
    """The `cell_result.json` of a model_dir, or None if the cell is unfinished."""
    path = os.path.join(model_dir, CELL_RESULT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def collect_runs(output_dir):
    """One row per finished cell under `output_dir` (dicts with `CSV_FIELDS`).

    Rows are sorted by dataset, precision, layer type (in `LAYER_TYPES`
    order), position, rank and seed.
    """
    rows = []
    for root, _, files in os.walk(output_dir):
        if CELL_RESULT_FILE in files:
            rows.append(run_row(
                read_cell_result(root), os.path.relpath(root, output_dir)
            ))
    rows.sort(key=grid_lib.report_order)
    return rows


def _the_same(runs, field, what):
    values = {json.dumps(run[field]) for run in runs}
    if len(values) != 1:
        first = runs[0]
        raise ValueError(
            f"Runs of {first['layer_type']} (position {first['position']}, rank "
            f"{first['rank']}, {first['precision']}, learning rate "
            f"{first['learning_rate']:g}) on {first['dataset']} have "
            f"different {what}: {sorted(values)}"
        )
    return runs[0][field]


def summarize(rows):
    """Groups runs over seeds: one summary per configuration.

    A configuration is (dataset, precision, learning rate, layer type,
    position, rank).

    Args:
        rows: run rows (see `collect_runs`).

    Returns:
        List of dicts with dataset, precision, layer_type, position, rank,
        the recipe (`RECIPE_FIELDS`), num_seeds, seeds, num_parameters,
        valid_mean, valid_se, test_mean, test_se (in `grid.report_order`).

    Raises:
        ValueError: if runs of one configuration have different parameter
            counts or recipes.
    """
    groups = collections.defaultdict(list)
    for row in rows:
        key = (row["dataset"], row["precision"], row["learning_rate"],
               row["layer_type"], row["position"], row["rank"])
        groups[key].append(row)
    summaries = []
    for (dataset, precision, _, layer_type, position, rank), runs in groups.items():
        valid_mean, valid_se = stats.mean_and_standard_error(
            [run["valid_accuracy"] for run in runs]
        )
        test_mean, test_se = stats.mean_and_standard_error(
            [run["test_accuracy"] for run in runs]
        )
        summaries.append(dict(
            dataset=dataset, precision=precision, layer_type=layer_type,
            position=position, rank=rank,
            **{field: _the_same(runs, field, f"`{field}` values")
               for field in RECIPE_FIELDS},
            num_seeds=len(runs),
            seeds=sorted(run["seed"] for run in runs),
            num_parameters=_the_same(runs, "num_parameters", "parameter counts"),
            valid_mean=valid_mean, valid_se=valid_se,
            test_mean=test_mean, test_se=test_se,
        ))
    summaries.sort(key=grid_lib.report_order)
    return summaries


def select_best_ranks(summaries):
    """Chooses the rank of each ranked layer type and position on validation.

    Args:
        summaries: output of `summarize`.

    Returns:
        List of the summaries kept for the paper-style table: every unranked
        configuration, and for each (dataset, precision, learning rate, ranked
        layer type, position) the rank with the highest mean validation accuracy (ties:
        the smaller rank). Test accuracy plays no part in the choice.
    """
    best = {}
    for summary in summaries:
        key = (summary["dataset"], summary["precision"], summary["learning_rate"],
               summary["layer_type"], summary["position"])
        current = best.get(key)
        if current is None or summary["valid_mean"] > current["valid_mean"]:
            best[key] = summary
    return sorted(best.values(), key=grid_lib.report_order)


def markdown_table(header, lines):
    """A markdown table of a header and rows of cells (str() of each)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(cell) for cell in line) + " |" for line in lines]
    return "\n".join(out)


def _only(name, values, dataset):
    """The one value of `values`; a ValueError naming `name` if there are several."""
    values = list(dict.fromkeys(values))
    if len(values) > 1:
        raise ValueError(
            f"Invalid value for argument `{name}`: dataset {dataset!r} has runs "
            f"at several values {values}; name one. Received: None"
        )
    return values[0] if values else None


def _configurations(summaries, dataset, precision, learning_rate):
    """The summaries of one dataset and setting (None: the dataset's only one)."""
    settings = grid_lib.settings_of(summaries, dataset)
    if precision is None:
        precision = _only("precision", [p for p, _ in settings], dataset)
    if learning_rate is None:
        learning_rate = _only("learning_rate",
                              [lr for p, lr in settings if p == precision], dataset)
    return [s for s in summaries
            if s["dataset"] == dataset and s["precision"] == precision
            and s["learning_rate"] == learning_rate]


def paper_table(selected, dataset, precision=None, learning_rate=None):
    """Markdown table in the paper's layout for one dataset and setting.

    Rows are layer types, columns block positions; an entry is the test
    accuracy (%) mean ± standard error over seeds at the best-validation
    checkpoint, the validation-selected rank as `K=...` and the trainable
    parameter count. Position-independent layer types repeat their value in
    every column.

    Args:
        selected: output of `select_best_ranks`.
        dataset: str.
        precision: str, or None for the dataset's only precision.
        learning_rate: float, or None for the only one of that precision.

    Returns:
        The markdown table (str), or '' when there are no runs of `dataset`.

    Raises:
        ValueError: if `precision` or `learning_rate` is None and the
            dataset has several.
    """
    rows = _configurations(selected, dataset, precision, learning_rate)
    if not rows:
        return ""
    positions = sorted({s["position"] for s in rows if s["position"] is not None})
    if not positions:
        positions = [None]
    header = ["Layer"] + [
        "any position" if p is None else f"position {p}" for p in positions
    ]
    lines = []
    for layer_type in grid_lib.LAYER_TYPES:
        entries = {s["position"]: s for s in rows if s["layer_type"] == layer_type}
        if not entries:
            continue
        line = [grid_lib.LAYER_LABELS[layer_type]]
        for position in positions:
            summary = entries.get(position, entries.get(None))
            if summary is None:
                line.append("—")
                continue
            text = stats.format_accuracy(summary["test_mean"], summary["test_se"])
            if summary["rank"] is not None:
                text += f" (K={summary['rank']})"
            line.append(f"{text}<br>{summary['num_parameters']:,} params")
        lines.append(line)
    return markdown_table(header, lines)


def full_table(summaries, dataset, precision=None, learning_rate=None):
    """Markdown table of every configuration of one dataset and setting.

    Returns '' when there is none; `precision` and `learning_rate` as in
    `paper_table`.
    """
    rows = _configurations(summaries, dataset, precision, learning_rate)
    if not rows:
        return ""
    header = [
        "Layer", "Position", "Rank", "Test acc. (%)", "Valid acc. (%)",
        "Params", "Seeds",
    ]
    lines = [
        [
            grid_lib.LAYER_LABELS[s["layer_type"]],
            "any" if s["position"] is None else s["position"],
            "—" if s["rank"] is None else s["rank"],
            stats.format_accuracy(s["test_mean"], s["test_se"]),
            stats.format_accuracy(s["valid_mean"], s["valid_se"]),
            f"{s['num_parameters']:,}",
            s["num_seeds"],
        ]
        for s in rows
    ]
    return markdown_table(header, lines)


def _comparison_part(found, dataset, setting):
    """The lines of a setting's table of `found` comparisons ([] when it has none)."""
    rows = [c for c in found
            if c["dataset"] == dataset and (c["precision"], c["learning_rate"]) == setting]
    if not rows:
        return []
    return [
        "Fixed LRLC at its validation-chosen rank against every other configuration "
        "(test accuracy, LRLC minus the other; ± sqrt(se1² + se2²), separable when "
        "above twice it):", "", markdown_table(*comparisons.table(rows)), "",
    ]


def render_markdown(summaries, selected, pairs=()):
    """The results.md text: per dataset (and setting, where it has several),
    the paper-style and the full table; then the precision parity of `pairs`
    (`parity.precision_pairs`), if any."""
    parts = []
    found = comparisons.lrlc_comparisons(summaries, selected)
    for dataset in sorted({s["dataset"] for s in summaries}):
        smoke = dataset in grid_lib.SMOKE_TEST_DATASETS
        settings = grid_lib.settings_of(summaries, dataset)
        for setting in settings:
            label = grid_lib.setting_label(setting, settings)
            heading = f"{dataset}, {label}" if label else dataset
            parts += [
                f"## {heading}" + (" (smoke test, not a result)" if smoke else ""),
                "",
                *([grid_lib.SMOKE_TEST_NOTE, ""] if smoke else []),
                "Test accuracy (%) at the best-validation checkpoint, mean ± "
                "standard error over seeds; ranks (K) chosen on validation "
                "accuracy.",
                "",
                paper_table(selected, dataset, *setting),
                "",
                "All configurations:",
                "",
                full_table(summaries, dataset, *setting),
                "",
                *_comparison_part(found, dataset, setting),
            ]
    if pairs:
        parts += [
            "## Precision parity",
            "",
            "Test accuracy of the same configurations and seeds in float32 and in "
            "a lower precision; the difference (lower minus float32) is per seed, "
            "mean ± standard error over seeds, separable when above twice its "
            "standard error.",
            "",
            markdown_table(*parity.table(pairs)),
            "",
        ]
    return "\n".join(parts)


def json_safe(summaries):
    """The summaries with NaN (one-seed) standard errors as null."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v
         for k, v in s.items()}
        for s in summaries
    ]


def write_text(path, text):
    """Writes a file atomically (the trainer's writer); returns `path`."""
    return run_dir.atomic_write_text(path, text)


def write_json(path, value):
    """Writes indented JSON atomically; returns `path`."""
    return write_text(path, json.dumps(value, indent=2) + "\n")


def _csv_value(field, value):
    if value is None:
        return ""
    if field == "num_filters":
        return ",".join(str(filters) for filters in value)
    return value


def write_results(rows, results_dir):
    """Writes results.csv, results.json, results.md and the rank plots of runs.

    Args:
        rows: run rows (`collect_runs`, or the 'runs' of a results.json).
        results_dir: str, created if needed.

    Returns:
        dict with 'runs', 'summaries', 'selected', 'precision_parity' and
        'files' (paths written); results.json also holds 'lrlc_comparisons'
        (`comparisons.lrlc_comparisons`).
        In results.csv `num_filters` is written like the `--num_filters` flag
        ('32,32,32') and None as an empty field.

    Raises:
        ValueError: as `summarize`.
    """
    rows = sorted(rows, key=grid_lib.report_order)
    summaries = summarize(rows)
    selected = select_best_ranks(summaries)
    pairs = parity.precision_pairs(rows)
    os.makedirs(results_dir, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(k, row[k]) for k in CSV_FIELDS})
    files = [
        write_text(os.path.join(results_dir, RESULTS_CSV), buffer.getvalue()),
        write_json(os.path.join(results_dir, RESULTS_JSON), dict(
            runs=rows, summaries=json_safe(summaries), selected=json_safe(selected),
            precision_parity=json_safe(pairs),
            lrlc_comparisons=json_safe(comparisons.lrlc_comparisons(summaries, selected)),
        )),
        write_text(os.path.join(results_dir, RESULTS_MD),
                   render_markdown(summaries, selected, pairs)),
    ]
    for dataset in sorted({row["dataset"] for row in rows}):
        path = os.path.join(results_dir, f"accuracy_vs_rank_{dataset}.png")
        if figures.plot_accuracy_vs_rank(summaries, dataset, path):
            files.append(path)
    return dict(runs=rows, summaries=summaries, selected=selected,
                precision_parity=pairs, files=files)


def _run_key(row):
    """A run's identity: its configuration and seed."""
    return tuple(json.dumps(row[field]) for field in (
        "dataset", "precision", "learning_rate", "layer_type", "position", "rank",
        "seed"))


def _read_runs(results_json):
    """The run rows of a `results.json` written by `write_results`.

    Raises:
        ValueError: if `results_json` does not exist or has no 'runs'.
    """
    try:
        with open(results_json) as f:
            runs = json.load(f)["runs"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"Invalid value for argument `merge_results`: {results_json!r} is not "
            f"a readable {RESULTS_JSON} of an earlier aggregation ({error!r})."
        ) from None
    return runs


def aggregate(output_dir, results_dir=None, merge_results=None):
    """Reads the finished cells of `output_dir` and writes the results there.

    Args:
        output_dir: str, the `run_grid` output directory to read.
        results_dir: str, where to write (default: `output_dir`).
        merge_results: str, optional path of the `results.json` of an earlier
            aggregation (e.g. of a grid's first cells, run on another machine
            whose run directories are gone): its runs are kept, except those
            whose configuration and seed also finished under `output_dir`,
            which replace them. Its rows keep their `model_dir`.

    Returns:
        As `write_results`.

    Raises:
        ValueError: if there is no run at all (neither a finished cell of
            `output_dir` nor a run of `merge_results`), `merge_results` is not
            readable, or as `summarize`.
    """
    rows = collect_runs(output_dir)
    if merge_results is not None:
        finished = {_run_key(row) for row in rows}
        rows += [row for row in _read_runs(merge_results)
                 if _run_key(row) not in finished]
    if not rows:
        raise ValueError(
            f"Invalid value for argument `output_dir`: no {CELL_RESULT_FILE} "
            f"found under {output_dir!r}."
        )
    return write_results(rows, results_dir or output_dir)

"""Tests of the experiment grid, its aggregation and the quick preset end to end."""

import csv
import glob
import json
import math
import os

from matplotlib import image as mpimg
import numpy as np
import pytest

from low_rank_local_connectivity import experiments
from low_rank_local_connectivity import training


def _write_cell(output_dir, cell, *, valid, test, params, best_step=100,
                train_steps=100):
    """A hand-made finished cell (the file `run_cell` writes)."""
    model_dir = cell.model_dir(output_dir)
    os.makedirs(model_dir)
    result = dict(
        cell=dict(dataset=cell.dataset, layer_type=cell.layer_type,
                  position=cell.position, rank=cell.rank, seed=cell.seed),
        config={},
        num_parameters=params,
        train_steps=train_steps,
        best_valid=dict(step=best_step, metrics=dict(accuracy=valid)),
        test=dict(accuracy=test, loss=0.1, num_examples=10),
        test_at_step=best_step,
        train_seconds=1.0,
    )
    with open(os.path.join(model_dir, experiments.CELL_RESULT_FILE), "w") as f:
        json.dump(result, f)


# Known numbers: (layer type, position, rank) -> per-seed (valid, test), params.
# Rank 2 wins on validation, rank 4 on test: the selection must pick rank 2.
_RUNS = {
    ("conv", None, None): ([(0.90, 0.91), (0.92, 0.93), (0.94, 0.92)], 1000),
    ("locally_connected", 2, None): ([(0.80, 0.81), (0.82, 0.80), (0.84, 0.83)], 9000),
    ("lrlc", 2, 1): ([(0.90, 0.90), (0.91, 0.91), (0.92, 0.92)], 1100),
    ("lrlc", 2, 2): ([(0.96, 0.94), (0.97, 0.95), (0.95, 0.93)], 1200),
    ("lrlc", 2, 4): ([(0.93, 0.99), (0.94, 0.98), (0.93, 0.99)], 1400),
}


@pytest.fixture
def hand_made_runs(tmp_path):
    output_dir = str(tmp_path / "runs")
    for (layer_type, position, rank), (seeds, params) in _RUNS.items():
        for seed, (valid, test) in enumerate(seeds):
            cell = experiments.Cell("mnist", layer_type, position, rank, seed)
            _write_cell(output_dir, cell, valid=valid, test=test, params=params)
    return output_dir


def _oracle(values):
    """Mean and standard error written out by hand."""
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance) / math.sqrt(n)


def test_mean_and_standard_error_matches_hand_formula():
    values = [0.91, 0.93, 0.92, 0.96]
    mean, se = experiments.mean_and_standard_error(values)
    expected_mean, expected_se = _oracle(values)
    assert mean == pytest.approx(expected_mean, abs=1e-12)
    assert se == pytest.approx(expected_se, abs=1e-12)


def test_mean_and_standard_error_single_and_empty():
    mean, se = experiments.mean_and_standard_error([0.5])
    assert mean == 0.5 and math.isnan(se)
    with pytest.raises(ValueError, match="`values`"):
        experiments.mean_and_standard_error([])


def test_aggregate_summaries_selection_and_files(hand_made_runs, tmp_path):
    results_dir = str(tmp_path / "results")
    results = experiments.aggregate(hand_made_runs, results_dir)

    # One row per run, in a stable order.
    assert len(results["runs"]) == 15
    summaries = {
        (s["layer_type"], s["position"], s["rank"]): s
        for s in results["summaries"]
    }
    assert set(summaries) == set(_RUNS)
    for key, (seeds, params) in _RUNS.items():
        summary = summaries[key]
        test_mean, test_se = _oracle([test for _, test in seeds])
        valid_mean, valid_se = _oracle([valid for valid, _ in seeds])
        assert summary["test_mean"] == pytest.approx(test_mean, abs=1e-12)
        assert summary["test_se"] == pytest.approx(test_se, abs=1e-12)
        assert summary["valid_mean"] == pytest.approx(valid_mean, abs=1e-12)
        assert summary["valid_se"] == pytest.approx(valid_se, abs=1e-12)
        assert summary["num_parameters"] == params
        assert summary["num_seeds"] == 3 and summary["seeds"] == [0, 1, 2]

    # The LRLC rank is chosen on validation (2), not test (4).
    selected = {(s["layer_type"], s["position"]): s for s in results["selected"]}
    assert selected[("lrlc", 2)]["rank"] == 2
    assert set(selected) == {("conv", None), ("locally_connected", 2), ("lrlc", 2)}

    # CSV: every run with its numbers.
    with open(os.path.join(results_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15
    lrlc4 = [r for r in rows if r["layer_type"] == "lrlc" and r["rank"] == "4"]
    assert sorted(float(r["test_accuracy"]) for r in lrlc4) == [0.98, 0.99, 0.99]
    conv = [r for r in rows if r["layer_type"] == "conv"]
    assert {r["position"] for r in conv} == {""}

    # JSON: the same summaries and selection.
    with open(os.path.join(results_dir, "results.json")) as f:
        saved = json.load(f)
    assert len(saved["runs"]) == 15
    assert [s["rank"] for s in saved["selected"] if s["layer_type"] == "lrlc"] == [2]

    # Markdown: paper-style row of LRLC at rank 2 with its mean ± s.e. in %.
    with open(os.path.join(results_dir, "results.md")) as f:
        markdown = f.read()
    mean, se = _oracle([0.94, 0.95, 0.93])
    expected = f"{100 * mean:.2f} ± {100 * se:.2f} (K=2)<br>1,200 params"
    lrlc_line = [line for line in markdown.splitlines() if line.startswith("| LRLC |")]
    assert lrlc_line and expected in lrlc_line[0]
    assert markdown.startswith("## mnist\n") and "smoke test" not in markdown
    header = markdown.splitlines()[4]
    assert header == "| Layer | position 2 |"
    # The full table lists all 5 configurations.
    full_rows = [
        line for line in markdown.split("All configurations:")[1].splitlines()
        if line.startswith("| ") and not line.startswith("| Layer")
    ]
    assert len(full_rows) == 5

    # The plot is a PNG that decodes.
    png = os.path.join(results_dir, "accuracy_vs_rank_mnist.png")
    assert png in results["files"]
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_aggregate_rejects_empty_dir_and_mixed_parameter_counts(tmp_path):
    with pytest.raises(ValueError, match="no cell_result.json"):
        experiments.aggregate(str(tmp_path))
    for seed, params in enumerate((10, 11)):
        cell = experiments.Cell("mnist", "conv", None, None, seed)
        _write_cell(str(tmp_path), cell, valid=0.5, test=0.5, params=params)
    with pytest.raises(ValueError, match="different parameter counts"):
        experiments.aggregate(str(tmp_path))


def test_grid_cells_count_and_names():
    grid = experiments.Grid(
        "mnist", "mnist", positions=(1, 2), ranks=(1, 2), seeds=(0, 1, 2)
    )
    cells = grid.cells()
    # conv + coord_conv: seeds; locally connected: positions × seeds; the three
    # ranked types: positions × ranks × seeds.
    expected = 2 * 3 + 2 * 3 + 3 * 2 * 2 * 3
    assert len(cells) == expected
    assert len({cell.name for cell in cells}) == expected
    assert experiments.Cell("mnist", "lrlc", 2, 4, 1).name == "lrlc_pos2_rank4_seed1"
    assert experiments.Cell("mnist", "conv", None, None, 0).name == "conv_seed0"


def test_get_grid_subsets_and_overrides():
    grid = experiments.get_grid(
        "trans_mnist42", ranks=[2], seeds=[0],
        train_overrides={"train_steps": 50, "eval_every_steps": 25},
        model_overrides={"num_filters": [8, 8, 8]},
    )
    assert grid.dataset == "trans_mnist42" and grid.recipe == "mnist"
    assert grid.ranks == (2,) and grid.seeds == (0,)
    assert grid.train["train_steps"] == 50
    assert grid.train["eval_every_steps"] == 25
    assert grid.model == {"num_filters": [8, 8, 8]}
    quick = experiments.get_grid(None, "quick")
    assert quick.dataset == "mnist_small"


def test_cell_config_places_layer_and_rank():
    grid = experiments.get_grid(
        "trans_mnist42", train_overrides={"train_steps": 40},
        model_overrides={"num_filters": [8, 8, 8]}
    )
    cell = experiments.Cell("trans_mnist42", "lrlc_input_dependent", 3, 4, 2)
    config = experiments.cell_config(cell, grid, data_dir="/data")
    training.validate_config(config)
    assert config.seed == 2
    assert config.dataset.name == "trans_mnist42"
    assert config.dataset.data_dir == "/data"
    assert list(config.model.layer_types) == [
        "conv2d", "conv2d", "low_rank_locally_connected2d",
    ]
    assert config.model.spatial_rank == 4
    assert config.model.input_dependent
    assert list(config.model.num_filters) == [8, 8, 8]
    assert config.train.train_steps == 40
    coord = experiments.cell_config(
        experiments.Cell("trans_mnist42", "coord_conv", None, None, 0), grid
    )
    assert coord.model.coord_conv
    assert list(coord.model.layer_types) == ["conv2d"] * 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layer_type="conv", position=2, rank=None), "`position`"),
        (dict(layer_type="lrlc", position=4, rank=2), "`position`"),
        (dict(layer_type="lrlc", position=2, rank=0), "`rank`"),
        (dict(layer_type="locally_connected", position=2, rank=2), "`rank`"),
        (dict(layer_type="lrcl", position=2, rank=2), "`layer_type`"),
    ],
)
def test_cell_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        experiments.Cell(dataset="mnist", seed=0, **kwargs)


def test_grid_and_get_grid_validation():
    with pytest.raises(ValueError, match="`dataset`"):
        experiments.get_grid("svhn")
    with pytest.raises(ValueError, match="`preset`"):
        experiments.get_grid("mnist", "slow")
    with pytest.raises(ValueError, match="`ranks`"):
        experiments.get_grid("mnist", ranks=[0])
    with pytest.raises(ValueError, match="`model`"):
        experiments.get_grid("mnist", model_overrides={"spatial_rank": 2})
    with pytest.raises(ValueError, match="`parallel`"):
        experiments.run_grid(experiments.QUICK_GRID, "/tmp/unused", parallel=0)


def test_quick_preset_end_to_end(tmp_path):
    """A 2-cell quick grid on the embedded data: runs, skips, aggregates."""
    grid = experiments.get_grid(
        None, "quick", layer_types=["conv", "lrlc"], ranks=[2], seeds=[0],
        train_overrides={"train_steps": 3, "eval_every_steps": 1},
    )
    output_dir = str(tmp_path / "runs")
    report = experiments.run_grid(grid, output_dir, parallel=2)
    assert sorted(report.finished) == ["conv_seed0", "lrlc_pos2_rank2_seed0"]
    assert not report.failed and not report.skipped

    for name in report.finished:
        model_dir = os.path.join(output_dir, "mnist_small", name)
        result = experiments.read_cell_result(model_dir)
        with open(os.path.join(model_dir, "metrics.jsonl")) as f:
            valid = [json.loads(l) for l in f if '"valid"' in l]
        # Best validation = the max over the 3 evaluations, and the test
        # metrics are those of that step.
        best = max(valid, key=lambda m: m["accuracy"])
        assert result["best_valid"]["metrics"]["accuracy"] == best["accuracy"]
        assert result["test_at_step"] == result["best_valid"]["step"]
        assert result["test"]["num_examples"] == 1000
        assert result["train_steps"] == 3
        # One checkpoint kept (a locally connected cell's is 250 MB), and the best.
        assert len(glob.glob(os.path.join(model_dir, "checkpoints", "*.index"))) == 1

    # Finished cells are skipped; a changed config is refused.
    again = experiments.run_grid(grid, output_dir, parallel=2)
    assert sorted(again.skipped) == sorted(report.finished) and not again.finished
    changed = experiments.get_grid(
        None, "quick", layer_types=["conv"], seeds=[0],
        train_overrides={"train_steps": 4, "eval_every_steps": 1},
    )
    with pytest.raises(ValueError, match="different config"):
        experiments.run_grid(changed, output_dir)

    results = experiments.aggregate(output_dir)
    with open(os.path.join(output_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["layer_type"] for r in rows] == ["conv", "lrlc"]
    assert int(rows[1]["num_parameters"]) > int(rows[0]["num_parameters"])
    with open(os.path.join(output_dir, "results.md")) as f:
        markdown = f.read()
    assert "| LRLC |" in markdown
    assert markdown.startswith(
        f"## mnist_small (smoke test, not a result)\n\n{experiments.SMOKE_TEST_NOTE}\n"
    )
    png = os.path.join(output_dir, "accuracy_vs_rank_mnist_small.png")
    assert png in results["files"]
    assert np.asarray(mpimg.imread(png)).shape[-1] in (3, 4)

"""Tests of the aggregation of finished cells: rows, summaries, selection, files."""

import csv
import json
import math
import os

from matplotlib import image as mpimg
import pytest

from cell_results import saved_config
from cell_results import write_cell
from low_rank_local_connectivity import experiments
from low_rank_local_connectivity.experiments import report


def _oracle(values):
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


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
    """Cells as a grid that predates the precision and environment fields wrote them."""
    output_dir = str(tmp_path / "runs")
    for (layer_type, position, rank), (seeds, params) in _RUNS.items():
        for seed, (valid, test) in enumerate(seeds):
            cell = experiments.Cell("mnist", layer_type, position, rank, seed)
            write_cell(output_dir, cell, valid=valid, test=test, params=params)
    return output_dir


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


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
        assert summary["precision"] == "float32"
        assert summary["num_filters"] == [32, 32, 32]

    # The LRLC rank is chosen on validation (2), not test (4).
    selected = {(s["layer_type"], s["position"]): s for s in results["selected"]}
    assert selected[("lrlc", 2)]["rank"] == 2
    assert set(selected) == {("conv", None), ("locally_connected", 2), ("lrlc", 2)}

    # CSV: every run with its numbers.
    rows = _read_csv(os.path.join(results_dir, "results.csv"))
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
    # One precision: no precision in the heading.
    assert markdown.startswith("## mnist\n") and "smoke test" not in markdown
    header = markdown.splitlines()[4]
    assert header == "| Layer | position 2 |"
    # The full table lists all 5 configurations.
    full_rows = [
        line for line in markdown.split("All configurations:")[1].split(
            "Fixed LRLC at its")[0].splitlines()
        if line.startswith("| ") and not line.startswith("| Layer")
    ]
    assert len(full_rows) == 5

    # The plot is a PNG that decodes.
    png = os.path.join(results_dir, "accuracy_vs_rank_mnist.png")
    assert png in results["files"]
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_csv_schema_recipe_from_the_saved_config_and_old_environment_defaults(tmp_path):
    output_dir = str(tmp_path / "runs")
    cell = experiments.Cell("mnist", "lrlc", 2, 4, 1)
    write_cell(output_dir, cell, valid=0.9, test=0.8, params=1234, train_steps=250,
               best_step=125, config=saved_config(
                   num_filters=(16, 16, 8), batch_size=64, learning_rate=0.01))
    experiments.aggregate(output_dir)

    (row,) = _read_csv(os.path.join(output_dir, "results.csv"))
    assert tuple(row) == experiments.CSV_FIELDS
    required = {
        "dataset", "layer_type", "position", "rank", "seed", "num_filters",
        "train_steps", "batch_size", "learning_rate", "precision", "backend",
        "device", "best_valid_step", "valid_accuracy", "test_accuracy",
        "num_parameters", "train_seconds", "test_at_step", "model_dir",
    }
    assert required <= set(row)
    assert row == dict(
        dataset="mnist", layer_type="lrlc", position="2", rank="4", seed="1",
        precision="float32", num_filters="16,16,8", train_steps="250",
        batch_size="64", learning_rate="0.01",
        # Written before cells recorded these: the documented defaults.
        backend="tensorflow", device="cpu", cpu_count="",
        num_parameters="1234", best_valid_step="125", valid_accuracy="0.9",
        test_accuracy="0.8", test_at_step="125", train_seconds="1.0",
        model_dir=os.path.join("mnist", "lrlc_pos2_rank4_seed1"),
    )


def test_rows_say_where_new_cells_ran(tmp_path):
    output_dir = str(tmp_path / "runs")
    cell = experiments.Cell("mnist", "conv", None, None, 0, "mixed_bfloat16")
    write_cell(output_dir, cell, valid=0.9, test=0.8, params=10,
               environment=dict(backend="jax", device="NVIDIA H200", cpu_count=16))
    (row,) = experiments.collect_runs(output_dir)
    assert (row["backend"], row["device"], row["cpu_count"]) == ("jax", "NVIDIA H200", 16)
    assert row["precision"] == "mixed_bfloat16"
    assert row["model_dir"] == os.path.join("mnist", "conv_seed0_bf16")


def test_precisions_are_separate_configurations(tmp_path):
    output_dir = str(tmp_path / "runs")
    accuracies = {"float32": (0.90, 0.92), "mixed_bfloat16": (0.80, 0.84)}
    for precision, tests in accuracies.items():
        for seed, test in enumerate(tests):
            for layer_type, position, rank in (("conv", None, None), ("lrlc", 2, 2)):
                cell = experiments.Cell("mnist", layer_type, position, rank, seed,
                                        precision)
                write_cell(output_dir, cell, valid=test, test=test, params=100)
    results = experiments.aggregate(output_dir)

    conv = {s["precision"]: s for s in results["summaries"] if s["layer_type"] == "conv"}
    assert set(conv) == set(accuracies)
    for precision, tests in accuracies.items():
        assert conv[precision]["test_mean"] == pytest.approx(sum(tests) / 2)
        assert conv[precision]["num_seeds"] == 2
    assert len(results["selected"]) == 4  # conv and LRLC, per precision.
    # float32 first, then bfloat16.
    assert [s["precision"] for s in results["summaries"]] == [
        "float32", "float32", "mixed_bfloat16", "mixed_bfloat16",
    ]

    with open(os.path.join(output_dir, "results.md")) as f:
        markdown = f.read()
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == ["## mnist, float32", "## mnist, mixed_bfloat16",
                        "## Precision parity"]
    bf16_section = markdown.split("## mnist, mixed_bfloat16")[1]
    assert "| Conv | 82.00 ± 2.00<br>100 params |" in bf16_section
    with pytest.raises(ValueError, match="`precision`.*several values"):
        experiments.paper_table(results["selected"], "mnist")
    assert "82.00" in experiments.full_table(
        results["summaries"], "mnist", "mixed_bfloat16"
    )


def test_learning_rates_are_separate_configurations_and_merge_apart(tmp_path):
    """A learning-rate sweep: one output_dir per learning rate, merged."""
    lr_runs = {0.001: (0.90, 0.92), 0.003: (0.95, 0.97)}
    results_json = None
    for learning_rate, tests in lr_runs.items():
        output_dir = str(tmp_path / f"lr{learning_rate:g}")
        for seed, test in enumerate(tests):
            for precision in ("float32", "mixed_bfloat16"):
                cell = experiments.Cell("mnist", "conv", None, None, seed, precision)
                write_cell(output_dir, cell, valid=test, test=test, params=100,
                           config=saved_config(precision, learning_rate=learning_rate))
        merged = experiments.aggregate(output_dir, str(tmp_path / "merged"),
                                       merge_results=results_json)
        results_json = str(tmp_path / "merged" / "results.json")

    assert len(merged["runs"]) == 8  # The second sweep replaced none of the first.
    means = {(s["precision"], s["learning_rate"]): s["test_mean"]
             for s in merged["summaries"]}
    for learning_rate, tests in lr_runs.items():
        for precision in ("float32", "mixed_bfloat16"):
            assert means[precision, learning_rate] == pytest.approx(sum(tests) / 2)
    assert len(merged["selected"]) == 4
    assert [p["learning_rate"] for p in merged["precision_parity"]] == [0.001, 0.003]
    with open(tmp_path / "merged" / "results.md") as f:
        markdown = f.read()
    assert [line for line in markdown.splitlines() if line.startswith("## ")] == [
        "## mnist, float32, learning rate 0.001", "## mnist, float32, learning rate 0.003",
        "## mnist, mixed_bfloat16, learning rate 0.001",
        "## mnist, mixed_bfloat16, learning rate 0.003", "## Precision parity"]
    assert "96.00 ± 1.00" in markdown.split("learning rate 0.003")[1]
    with pytest.raises(ValueError, match="`learning_rate`.*several values"):
        experiments.full_table(merged["summaries"], "mnist", "float32")
    assert "91.00 ± 1.00" in experiments.full_table(
        merged["summaries"], "mnist", "float32", 0.001)


def test_precision_parity_pairs_seeds_and_judges_the_difference(tmp_path):
    output_dir = str(tmp_path / "runs")
    # Per seed (float32, bf16) test accuracy. Conv: bf16 shifts by -0.01,
    # -0.03, +0.01 (not separable). LRLC: -0.10, -0.11, -0.12 (separable).
    # Seed 3 of LRLC has no float32 run: it is not paired.
    runs = {
        ("conv", None, None): [(0.90, 0.89), (0.92, 0.89), (0.91, 0.92)],
        ("lrlc", 2, 4): [(0.95, 0.85), (0.96, 0.85), (0.97, 0.85), (None, 0.50)],
    }
    for (layer_type, position, rank), seeds in runs.items():
        for seed, accuracies in enumerate(seeds):
            for precision, test in zip(("float32", "mixed_bfloat16"), accuracies):
                if test is not None:
                    cell = experiments.Cell("mnist", layer_type, position, rank, seed,
                                            precision)
                    write_cell(output_dir, cell, valid=test, test=test, params=100)
    results = experiments.aggregate(output_dir)

    pairs = {pair["layer_type"]: pair for pair in results["precision_parity"]}
    assert sorted(pairs) == ["conv", "lrlc"]
    for layer_type, pair in pairs.items():
        paired = [(f, b) for f, b in runs[layer_type, pair["position"], pair["rank"]]
                  if f is not None]
        mean, se = _oracle([b - f for f, b in paired])
        assert pair["seeds"] == [0, 1, 2] and pair["precision"] == "mixed_bfloat16"
        assert pair["difference_mean"] == pytest.approx(mean)
        assert pair["difference_se"] == pytest.approx(se)
        assert pair["reference_test_mean"] == pytest.approx(
            sum(f for f, _ in paired) / 3)
    assert pairs["conv"]["verdict"] == "not separable"
    assert pairs["lrlc"]["verdict"] == "separable"
    with open(os.path.join(output_dir, "results.md")) as f:
        parity = f.read().split("## Precision parity")[1]
    assert ("| mnist | 0.03 | Conv | any | — | 0,1,2 | 91.00 | 90.00 (mixed_bfloat16) "
            "| -1.00 ± 1.15 | not separable |") in parity
    with open(os.path.join(output_dir, "results.json")) as f:
        assert json.load(f)["precision_parity"][1]["verdict"] == "separable"


def test_no_parity_section_without_runs_in_two_precisions(hand_made_runs):
    results = experiments.aggregate(hand_made_runs)
    assert results["precision_parity"] == []
    with open(os.path.join(hand_made_runs, "results.md")) as f:
        assert "Precision parity" not in f.read()


def test_write_results_from_a_results_json_reproduces_the_files(hand_made_runs, tmp_path):
    """The committed results of docs/results are regenerated this way."""
    first = str(tmp_path / "first")
    experiments.aggregate(hand_made_runs, first)
    with open(os.path.join(first, "results.json")) as f:
        runs = json.load(f)["runs"]
    again = str(tmp_path / "again")
    experiments.write_results(runs, again)
    for name in ("results.csv", "results.json", "results.md"):
        with open(os.path.join(first, name)) as f, open(os.path.join(again, name)) as g:
            assert f.read() == g.read(), name


def test_aggregate_rejects_empty_dir_mixed_parameter_counts_and_recipes(tmp_path):
    with pytest.raises(ValueError, match="no cell_result.json"):
        experiments.aggregate(str(tmp_path))
    for seed, params in enumerate((10, 11)):
        cell = experiments.Cell("mnist", "conv", None, None, seed)
        write_cell(str(tmp_path / "params"), cell, valid=0.5, test=0.5, params=params)
    with pytest.raises(ValueError, match="different parameter counts"):
        experiments.aggregate(str(tmp_path / "params"))
    for seed, batch_size in enumerate((64, 128)):
        cell = experiments.Cell("mnist", "conv", None, None, seed)
        write_cell(str(tmp_path / "recipes"), cell, valid=0.5, test=0.5, params=10,
                   config=saved_config(batch_size=batch_size))
    with pytest.raises(ValueError, match="different `batch_size` values"):
        experiments.aggregate(str(tmp_path / "recipes"))


def test_markdown_table_and_json_safe():
    assert report.markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    assert report.json_safe([dict(se=math.nan, mean=0.5)]) == [dict(se=None, mean=0.5)]


def test_aggregate_keeps_the_runs_of_an_earlier_results_json(hand_made_runs, tmp_path):
    """A grid continued on another machine: earlier rows stay, new cells replace theirs."""
    earlier = str(tmp_path / "earlier")
    experiments.aggregate(hand_made_runs, earlier)
    later_runs = str(tmp_path / "later")
    # A new seed of conv and a rerun of locally connected seed 0.
    write_cell(later_runs, experiments.Cell("mnist", "conv", None, None, 3),
               valid=0.95, test=0.96, params=1000)
    write_cell(later_runs, experiments.Cell("mnist", "locally_connected", 2, None, 0),
               valid=0.70, test=0.71, params=9000)
    merged = experiments.aggregate(
        later_runs, str(tmp_path / "merged"),
        merge_results=os.path.join(earlier, "results.json"))
    runs = {(r["layer_type"], r["seed"]): r for r in merged["runs"]}
    assert len(merged["runs"]) == 16
    assert runs[("conv", 3)]["test_accuracy"] == 0.96
    assert runs[("locally_connected", 0)]["test_accuracy"] == 0.71
    assert runs[("locally_connected", 1)]["test_accuracy"] == 0.80  # Kept from before.
    summaries = {s["layer_type"]: s for s in merged["summaries"] if s["rank"] is None}
    assert summaries["conv"]["test_mean"] == pytest.approx((0.91 + 0.93 + 0.92 + 0.96) / 4)
    assert summaries["locally_connected"]["seeds"] == [0, 1, 2]
    with pytest.raises(ValueError, match="merge_results.*not a readable results.json"):
        experiments.aggregate(later_runs, merge_results=str(tmp_path / "missing.json"))

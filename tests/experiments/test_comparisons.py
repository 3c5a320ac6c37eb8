"""Tests of the claims' comparisons: the validation-chosen LRLC against the rest."""

import json
import math

import pytest

from cell_results import saved_config
from cell_results import write_cell
from low_rank_local_connectivity import experiments

# (layer type, position, rank) -> per-seed (valid, test). At position 2 rank 4
# wins on validation (rank 8 on test); at position 3 rank 2 is the only rank.
_RUNS = {
    ("conv", None, None): [(0.90, 0.90), (0.92, 0.92), (0.91, 0.94)],
    ("locally_connected", 2, None): [(0.93, 0.93), (0.93, 0.93), (0.93, 0.93)],
    ("lrlc", 2, 4): [(0.97, 0.95), (0.97, 0.96), (0.97, 0.97)],
    ("lrlc", 2, 8): [(0.96, 0.99), (0.96, 0.99), (0.96, 0.99)],
    ("lrlc_input_dependent", 2, 4): [(0.95, 0.96), (0.95, 0.96), (0.95, 0.96)],
    ("lrlc", 3, 2): [(0.94, 0.91), (0.94, 0.91), (0.94, 0.91)],
}


def _write_grid(output_dir, learning_rate, runs):
    for (layer_type, position, rank), seeds in runs.items():
        for seed, (valid, test) in enumerate(seeds):
            cell = experiments.Cell("mnist", layer_type, position, rank, seed)
            write_cell(output_dir, cell, valid=valid, test=test, params=10,
                       config=saved_config(learning_rate=learning_rate))


def test_chosen_lrlc_is_compared_with_its_setting_and_position(tmp_path):
    _write_grid(str(tmp_path / "a"), 0.03, _RUNS)
    # Another learning rate: its runs must not enter the 0.03 comparisons.
    _write_grid(str(tmp_path / "b"), 0.001, {("conv", None, None): [(0.5, 0.5)]})
    experiments.aggregate(str(tmp_path / "a"), str(tmp_path / "merged"))
    merged = experiments.aggregate(
        str(tmp_path / "b"), str(tmp_path / "merged"),
        merge_results=str(tmp_path / "merged" / "results.json"))
    with open(tmp_path / "merged" / "results.json") as f:
        found = json.load(f)["lrlc_comparisons"]
    assert len(merged["runs"]) == 19

    by_pair = {(c["position"], c["rank"], c["layer_type"], c["other_position"],
                c["other_rank"]): c for c in found}
    # Position 2 (LRLC K=4, chosen on validation) sees conv, LC, the other rank
    # and input-dependent; position 3 (K=2) sees only the position-free conv.
    assert set(by_pair) == {
        (2, 4, "conv", None, None), (2, 4, "locally_connected", 2, None),
        (2, 4, "lrlc", 2, 8), (2, 4, "lrlc_input_dependent", 2, 4),
        (3, 2, "conv", None, None)}
    assert {c["learning_rate"] for c in found} == {0.03}

    # Conv: 0.96 - 0.92; se = sqrt(0.01² / 3 + 0.02² / 3) by hand.
    conv = by_pair[2, 4, "conv", None, None]
    assert conv["difference_mean"] == pytest.approx(0.04)
    assert conv["difference_se"] == pytest.approx(math.sqrt((1e-4 + 4e-4) / 3))
    assert conv["verdict"] == "separable"  # 0.04 > 2 × 0.0129.
    # Against rank 8 the chosen rank loses: the sign says which is better.
    assert by_pair[2, 4, "lrlc", 2, 8]["difference_mean"] == pytest.approx(-0.03)
    assert by_pair[2, 4, "lrlc", 2, 8]["verdict"] == "separable"
    # Position 3 vs conv: -0.01 ± 0.0115 is not separable.
    assert by_pair[3, 2, "conv", None, None]["verdict"] == "not separable"

    with open(tmp_path / "merged" / "results.md") as f:
        markdown = f.read()
    section = markdown.split("learning rate 0.03")[1]
    assert "| K=4, position 2 | 96.00 | Conv | 92.00 | +4.00 ± 1.29 | separable |" in section
    assert "| K=4, position 2 | 96.00 | LRLC (K=8) | 99.00 | -3.00 ± 0.58 | separable |" in section
    assert "| K=2, position 3 | 91.00 | Conv | 92.00 | -1.00 ± 1.15 | not separable |" in section
    # The 0.001 setting has no LRLC, so no comparison table.
    assert "validation-chosen rank" not in markdown.split("learning rate 0.03")[0]


def test_one_seed_differences_have_no_error_and_are_not_separable(tmp_path):
    _write_grid(str(tmp_path), 0.03, {("conv", None, None): [(0.9, 0.9)],
                                      ("lrlc", 2, 4): [(0.99, 0.99)]})
    results = experiments.aggregate(str(tmp_path))
    with open(tmp_path / "results.json") as f:
        (comparison,) = json.load(f)["lrlc_comparisons"]
    assert comparison["difference_mean"] == pytest.approx(0.09)
    assert comparison["difference_se"] is None  # NaN in Python, null in JSON.
    assert comparison["verdict"] == "not separable"
    assert "| K=4, position 2 | 99.00 | Conv | 90.00 | +9.00 | not separable |" in (
        open(tmp_path / "results.md").read())
    assert len(results["runs"]) == 2

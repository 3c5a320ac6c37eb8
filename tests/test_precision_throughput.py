"""Tests of tools/precision_throughput.py: case parsing, the summary and its table."""

import pytest
from absl import app

from tools import precision_throughput as pt


def test_a_case_is_a_preset_with_typed_config_overrides():
    assert pt.parse_case("conv") == ("conv", {})
    assert pt.parse_case("lrlc:model.spatial_rank=4:train.jit_compile=True") == (
        "lrlc", {"model.spatial_rank": 4, "train.jit_compile": True}
    )
    assert pt.parse_case("lrlc:model.normalize_weights=norm") == (
        "lrlc", {"model.normalize_weights": "norm"}
    )
    with pytest.raises(app.UsageError, match="model:key=value"):
        pt.parse_case("lrlc:model.spatial_rank")


def _rows(rates):
    return [
        dict(case=case, precision=precision, round=index, examples_per_second=rate,
             load_average=2.0 + index)
        for (case, precision), values in rates.items()
        for index, rate in enumerate(values)
    ]


def test_summary_and_table_report_medians_ranges_and_per_round_ratios():
    precisions = ["float32", "mixed_bfloat16"]
    rows = _rows({
        ("conv", "float32"): [100.0, 50.0, 200.0],
        ("conv", "mixed_bfloat16"): [200.0, 250.0, 400.0],
    })
    (entry,) = pt.summarize(rows, ["conv"], precisions)
    assert entry["float32"] == dict(median=100.0, min=50.0, max=200.0)
    assert entry["mixed_bfloat16"] == dict(median=250.0, min=200.0, max=400.0)
    # Per-round ratios 2, 5, 2: their median, not the ratio of the medians (2.5).
    assert entry["ratios"] == {"mixed_bfloat16": 2.0}
    assert entry["load_average"] == [2.0, 4.0]
    report = dict(
        precisions=precisions, command="python -m tools.precision_throughput",
        tensorflow="2.x", keras="3.x", cpu="a CPU", cpu_count=2, date="today",
        batch_size=128, steps=20, rounds=3, summary=[entry],
    )
    layer_benchmark = dict(mixed_precision="mixed_bfloat16", command="python b.py",
                           ratio_table="| mode | ... |")
    text = pt.markdown(report, layer_benchmark)
    assert "Command: `python -m tools.precision_throughput`" in text
    assert "| conv | 100 [50–200] | 250 [200–400] | x2.00 | 2.0–4.0 |" in text
    assert text.count("|---|---|---|---|---|") == 1
    assert "Command: `python b.py`" in text and text.rstrip().endswith("| mode | ... |")

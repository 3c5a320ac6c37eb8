"""End-to-end check of scripts/benchmark.py on a tiny shape (no timing assertions)."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_benchmark_writes_ratios_parameter_counts_and_tables(tmp_path):
    result = subprocess.run(
        [
            sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"),
            "--suite=smoke", "--modes=graph", "--repeats=2", "--warmup=0",
            "--layers=conv,lrlc,lrlc_input_dependent,locally_connected,tf_keras_locally_connected1,wide_conv",
            f"--output_dir={tmp_path}",
        ],
        check=True, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    # One tf.function per case is intended: TensorFlow's retracing warnings
    # (14 functions here) are not shown.
    assert "retracing" not in result.stderr and "WARNING" not in result.stderr
    report = json.loads((tmp_path / "benchmark.json").read_text())
    rows = {row["layer"]: row for row in report["rows"]}
    assert report["reference"] == "conv_kf"
    assert set(rows) == {"conv_kf", "conv", "lrlc", "lrlc_input_dependent", "locally_connected",
                         "tf_keras_locally_connected1", "wide_conv"}
    # Ratios are per-round time / reference time, so the reference's is exactly 1.
    assert rows["conv_kf"]["forward_ratio"] == 1.0
    assert rows["conv_kf"]["forward_backward_ratio"] == 1.0
    for row in rows.values():
        assert row["forward_ms"] > 0 and row["forward_backward_ratio"] > 0
    # Smoke preset: batch 2, 8x8x4 -> 4 channels, rank 2, 3x3 kernels, output 6x6.
    c, f, k, out = 4, 4, 2, 6
    assert rows["conv"]["params"] == 9 * c * f + f
    assert rows["conv_kf"]["params"] == 9 * c * k * f + k * f
    assert rows["lrlc"]["params"] == 9 * c * k * f + 2 * out * k + 2 * out + f
    assert rows["locally_connected"]["params"] == rows["tf_keras_locally_connected1"]["params"] == out * out * (9 * c * f + f)
    assert rows["wide_conv"]["params"] == 9 * c * 6 + 6  # int((K*C + F) / (C + F) * F) = 6
    ratios, table = (tmp_path / "benchmark.md").read_text().split("\n\n")
    assert table.count("\n") == len(rows) + 2 and "| lrlc |" in table
    # One line per (mode, shape, K), one column per layer but the reference.
    header, _, line = ([c.strip() for c in text.strip("|").split("|")]
                       for text in ratios.splitlines())
    assert header[4:] == [name for name in rows if name != "conv_kf"]
    assert line[:4] == ["graph", "2,8,8,4→4", "2", f"{rows['conv_kf']['forward_backward_ms']:.1f}"]
    assert line[4:] == [f"{rows[name]['forward_backward_ratio']:.2f}" for name in header[4:]]


def test_benchmark_times_the_layers_in_the_precision_asked_for(tmp_path):
    subprocess.run(
        [
            sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"),
            "--suite=smoke", "--modes=graph", "--repeats=1", "--warmup=0",
            "--layers=lrlc,locally_connected,tf_keras_locally_connected1", "--mixed_precision=mixed_bfloat16",
            f"--output_dir={tmp_path}",
        ],
        check=True, capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["mixed_precision"] == "mixed_bfloat16"
    assert "--mixed_precision=mixed_bfloat16" in report["command"]
    assert {row["layer"]: row["compute_dtype"] for row in report["rows"]} == {
        name: "bfloat16" for name in ("conv_kf", "lrlc", "locally_connected", "tf_keras_locally_connected1")
    }
    assert all(row["forward_backward_ms"] > 0 for row in report["rows"])


def test_peak_memory_counts_a_step_allocation_and_is_none_without_statistics(monkeypatch):
    import tensorflow as tf

    from low_rank_local_connectivity.cli import benchmark_steps

    def step():
        return (tf.random.uniform((1024, 1024)) + 1.0).numpy()  # 4 MiB and more

    assert benchmark_steps.peak_memory_bytes(step) >= 4 * 2**20

    def no_statistics(device):
        # What TensorFlow raises on a CPU where oneDNN is off (AVX2-only CPUs).
        raise ValueError(f"Allocator stats not available for device '{device}'")

    monkeypatch.setattr(tf.config.experimental, "get_memory_info", no_statistics)
    assert benchmark_steps.peak_memory_bytes(step) is None

"""Tests of running a grid: finished-cell checks, the data check, failures, and
the quick preset end to end."""

import csv
import glob
import json
import logging
import os

from matplotlib import image as mpimg
import numpy as np
import pytest

from low_rank_local_connectivity import data
from low_rank_local_connectivity import experiments
from low_rank_local_connectivity import training


def _tiny_quick_grid(**overrides):
    return experiments.get_grid(
        None, "quick", layer_types=["conv"], seeds=[0],
        train_overrides=dict(dict(train_steps=3, eval_every_steps=1), **overrides),
    )


def test_experiment_differences_ignore_new_fields_and_bookkeeping():
    saved = dict(seed=0, preset="a", model=dict(num_filters=[8], old=1),
                 dataset=dict(name="mnist", data_dir="/a"),
                 train=dict(train_steps=3, log_every_steps=1, optimizer=dict(learning_rate=0.1)))
    requested = json.loads(json.dumps(saved))
    # Newer code added fields; the data moved; the trainer logs more often.
    requested["model"]["added_by_newer_code"] = True
    requested["train"]["optimizer"]["added"] = 0.5
    del requested["model"]["old"]
    requested["dataset"]["data_dir"] = "/b"
    requested["train"]["log_every_steps"] = 100
    requested["preset"] = "b"
    assert experiments.experiment_differences(saved, requested) == []
    requested["train"]["optimizer"]["learning_rate"] = 0.2
    requested["seed"] = 1
    assert experiments.experiment_differences(saved, requested) == [
        ("seed", 0, 1), ("train.optimizer.learning_rate", 0.1, 0.2),
    ]


def _finish_by_hand(grid, output_dir, edit):
    """Writes the cell_result.json of the grid's one cell with an edited config."""
    (cell,) = grid.cells()
    config = json.loads(experiments.cell_config(cell, grid).to_json_best_effort())
    edit(config)
    model_dir = cell.model_dir(output_dir)
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, experiments.CELL_RESULT_FILE), "w") as f:
        json.dump(dict(cell=dict(dataset=cell.dataset, layer_type=cell.layer_type,
                                 position=None, rank=None, seed=0), config=config), f)
    return cell


def test_finished_cell_of_older_code_is_skipped(tmp_path):
    """A finished cell whose config lacks fields newer code added is done."""
    grid = _tiny_quick_grid()

    def older(config):
        del config["train"]["deterministic"]
        del config["model"]["kernel_initializer"]
        config["dataset"]["data_dir"] = "/where/the/data/was"

    cell = _finish_by_hand(grid, str(tmp_path), older)
    report = experiments.run_grid(grid, str(tmp_path))
    assert report.skipped == [cell.name] and not report.finished and not report.failed


def test_finished_cell_of_another_experiment_is_refused(tmp_path):
    grid = _tiny_quick_grid()

    def other(config):
        config["train"]["train_steps"] = 4

    _finish_by_hand(grid, str(tmp_path), other)
    with pytest.raises(ValueError, match=r"different config \(train.train_steps: 4 -> 3\)"):
        experiments.run_grid(grid, str(tmp_path))


def test_missing_data_is_found_once_before_any_cell_starts(tmp_path):
    grid = experiments.get_grid("cifar10", layer_types=["conv", "lrlc"], ranks=[1, 2])
    output_dir = tmp_path / "runs"
    with pytest.raises(data.DataNotFoundError, match="not prepared in data_dir"):
        experiments.run_grid(grid, str(output_dir), data_dir=str(tmp_path / "empty"))
    assert not output_dir.exists()  # No cell was started.


def test_failing_cell_reports_its_error_and_logs_the_traceback(tmp_path):
    # The trainer refuses the config in the worker: a quick, real failure.
    grid = _tiny_quick_grid(**{"optimizer.name": "adamw_typo"})
    report = experiments.run_grid(grid, str(tmp_path))
    assert not report.finished and list(report.failed) == ["conv_seed0"]
    message = report.failed["conv_seed0"]
    assert message.startswith("ValueError: ") and "adamw_typo" in message
    with open(tmp_path / "mnist_small" / "conv_seed0" / "train.log") as f:
        log = f.read()
    assert "Cell conv_seed0 in " in log and "Traceback" in log and "adamw_typo" in log


def test_a_finished_cell_keeps_its_newest_and_best_checkpoints_only(tmp_path):
    # Trained with 3 checkpoints kept, one per step.
    grid = _tiny_quick_grid(checkpoint_every_steps=1, keep_checkpoints=3)
    output_dir = str(tmp_path / "runs")
    assert experiments.run_grid(grid, output_dir).finished == ["conv_seed0"]
    model_dir = os.path.join(output_dir, "mnist_small", "conv_seed0")
    names = lambda folder: sorted(  # noqa: E731
        os.path.basename(p) for p in glob.glob(os.path.join(model_dir, folder, "*.index")))
    assert names("checkpoints") == ["ckpt-3.index"]  # ckpt-1 and ckpt-2 deleted.
    best_step = experiments.read_cell_result(model_dir)["best_valid"]["step"]
    assert names("best") == [f"best-{best_step}.index"]
    run = training.open_run(model_dir)
    assert run.load_model("latest")[2] == 3 and run.load_model("best")[2] == best_step
    # A longer run of the cell resumes from the kept checkpoint.
    longer = _tiny_quick_grid(train_steps=4, checkpoint_every_steps=1, keep_checkpoints=3)
    config = experiments.cell_config(longer.cells()[0], longer)
    assert training.train_and_evaluate(config, model_dir, progress=False)["session_steps"] == 1


def test_quick_preset_end_to_end(tmp_path, caplog):
    """A 2-cell quick grid on the embedded data: runs, skips, aggregates."""
    grid = experiments.get_grid(
        None, "quick", layer_types=["conv", "lrlc"], ranks=[2], seeds=[0],
        train_overrides={"train_steps": 3, "eval_every_steps": 1},
    )
    output_dir = str(tmp_path / "runs")
    # On absl's logger itself: a test before this one in the same process may
    # have set absl's verbosity (flags parsed in-process).
    with caplog.at_level(logging.INFO, logger="absl"):
        report = experiments.run_grid(grid, output_dir, parallel=2)
    assert sorted(report.finished) == ["conv_seed0", "lrlc_pos2_rank2_seed0"]
    assert not report.failed and not report.skipped
    progress = [r.getMessage() for r in caplog.records if " done: test accuracy" in r.getMessage()]
    assert len(progress) == 2
    assert "1/2 cells done, 1 left; " in progress[0] and " to go)" in progress[0]
    assert "2/2 cells done, 0 left; " in progress[1]

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
        # Where it ran.
        assert result["backend"] == "tensorflow"
        assert result["device"] == "cpu" or result["device"].strip()
        assert result["cpu_count"] == os.cpu_count()
        assert result["cell"]["precision"] == "float32"
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
    assert {r["num_filters"] for r in rows} == {"64,64,64"}
    assert {r["cpu_count"] for r in rows} == {str(os.cpu_count())}
    with open(os.path.join(output_dir, "results.md")) as f:
        markdown = f.read()
    assert "| LRLC |" in markdown
    assert markdown.startswith(
        f"## mnist_small (smoke test, not a result)\n\n{experiments.SMOKE_TEST_NOTE}\n"
    )
    png = os.path.join(output_dir, "accuracy_vs_rank_mnist_small.png")
    assert png in results["files"]
    assert np.asarray(mpimg.imread(png)).shape[-1] in (3, 4)


def test_run_grid_validation():
    with pytest.raises(ValueError, match="`parallel`"):
        experiments.run_grid(experiments.QUICK_GRID, "/tmp/unused", parallel=0)
    with pytest.raises(ValueError, match="`shard_index`"):
        experiments.run_grid(experiments.QUICK_GRID, "/tmp/unused", num_shards=2,
                             shard_index=2)

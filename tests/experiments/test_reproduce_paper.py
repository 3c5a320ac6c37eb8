"""Tests of scripts/reproduce_paper.py as a user meets it: --help, missing data,
and stopping a running grid with Ctrl-C or SIGTERM."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = str(REPO_ROOT / "scripts" / "reproduce_paper.py")
_RESUME_LINE = re.compile(
    r"^Interrupted by SIG(INT|TERM): the grid and its workers stopped\. Rerunning "
    r"the same command resumes it: finished cells are skipped, interrupted ones "
    r"resume from their last checkpoint\.$"
)


def _run(tmp_path, *flags, timeout=240):
    return subprocess.run(
        [sys.executable, SCRIPT, *flags], capture_output=True, text=True,
        timeout=timeout, cwd=tmp_path,
    )


def test_help_exits_0_keeps_line_breaks_and_writes_under_runs(tmp_path):
    result = _run(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The examples keep their continuation lines.
    start = lines.index("    lrlc-reproduce --dataset=mnist \\")
    assert lines[start + 1].strip() == (
        "--data_dir=$HOME/tensorflow_datasets --positions=2 --ranks=1,2,4,8 \\")
    # Every example writes under runs/ or a folder the user names, never docs/.
    outputs = re.findall(r"--(?:output|results)_dir=(\S+)", result.stdout)
    assert outputs and all(
        path.startswith(("runs/", "<")) for path in outputs), outputs
    assert "docs/results" not in " ".join(outputs)
    assert "--mixed_precision" in result.stdout


def _flags(command):
    return {word for word in command.replace("\\\n", " ").split() if word.startswith("--")}


def test_help_recipe_is_the_one_docs_results_says_was_run(tmp_path):
    """The --help's docs/results grid has the flags of docs/results/README.md."""
    help_text = _run(tmp_path, "--help").stdout
    readme = (REPO_ROOT / "docs" / "results" / "README.md").read_text()
    common = re.search(r'COMMON="([^"]*)"', readme).group(1)
    mnist = re.search(r"reproduce_paper\.py (--dataset=mnist --positions=2 \\\n"
                      r"\s*--ranks=1,2,4,8 [^\n]*)", readme).group(1)
    example = help_text.split("# The MNIST grid of docs/results")[1].split("\n\n")[0]
    assert _flags(example) == _flags(common) | _flags(mnist)


def _error_line_with_an_empty_folder(tmp_path, dataset, flag):
    """The one stderr line of a grid given an empty folder as `flag`; no cell ran."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(tmp_path, f"--dataset={dataset}", f"--{flag}={empty}",
                  f"--output_dir={tmp_path / 'runs'}")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert not (tmp_path / "runs").exists()
    return line, empty


def test_missing_data_is_one_error_line_before_any_cell(tmp_path):
    line, _ = _error_line_with_an_empty_folder(tmp_path, "cifar10", "data_dir")
    assert line.startswith("error: Dataset 'cifar10' (TFDS 'cifar10', version ")
    assert "is not prepared in data_dir" in line
    # The ways out are named as this script's flags.
    for way in ("1. --download=True", "2. --data_dir=<folder>", "3. --manual_dir=<folder>"):
        assert way in line


def test_an_idx_dir_without_mnist_is_one_error_line_naming_the_flag(tmp_path):
    line, empty = _error_line_with_an_empty_folder(tmp_path, "mnist", "idx_dir")
    assert line.startswith("error: Invalid value for argument `--idx_dir`. Expected a "
                           "folder with the MNIST idx files")
    assert f"Received: --idx_dir='{empty}'" in line


def _worker_pids(cell_dirs):
    """The pids of the cells' workers, once each has started training."""
    pids = {}
    for cell_dir in cell_dirs:
        log = cell_dir / "train.log"
        text = log.read_text() if log.exists() else ""
        pid = re.search(r": worker process (\d+)\.", text)
        if pid and "Training mnist_small_lrlc from step 0" in text:
            pids[cell_dir.name] = int(pid.group(1))
    return pids


def _group_members(group):
    """The pids of the live (not zombie) processes of a process group."""
    members = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                # pid (comm) state ppid pgrp ...; comm may hold spaces.
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # The process ended meanwhile.
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.split("/")[2]))
    return members


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")
@pytest.mark.parametrize("signal_number, to_group", [
    (signal.SIGINT, True),  # Ctrl-C: the terminal signals the whole group.
    (signal.SIGTERM, False),  # kill <pid>: the parent only.
])
def test_a_signal_stops_the_grid_and_every_worker(tmp_path, signal_number, to_group):
    output_dir = tmp_path / "runs"
    # Three cells, two at a time: the LRLC cells train (long), conv waits.
    grid = subprocess.Popen(
        [sys.executable, SCRIPT, "--scale=quick", "--layer_types=conv,lrlc",
         "--ranks=1,2", "--seeds=0", "--train_steps=1000000",
         "--eval_every_steps=1000000", "--parallel=2", f"--output_dir={output_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        start_new_session=True,
    )
    cells = [output_dir / "mnist_small" / f"lrlc_pos2_rank{rank}_seed0" for rank in (1, 2)]
    try:
        deadline = time.monotonic() + 300
        while len(_worker_pids(cells)) < 2 and grid.poll() is None:
            assert time.monotonic() < deadline, "the workers did not start training"
            time.sleep(1)
        pids = _worker_pids(cells)
        if to_group:
            os.killpg(grid.pid, signal_number)
        else:
            grid.send_signal(signal_number)
        stdout, stderr = grid.communicate(timeout=120)
    finally:
        if grid.poll() is None:
            os.killpg(grid.pid, signal.SIGKILL)
            grid.wait()

    assert grid.returncode == 128 + signal_number, stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout
    resume_lines = [line for line in stderr.splitlines() if _RESUME_LINE.match(line)]
    assert len(resume_lines) == 1 and stderr.splitlines()[-1] == resume_lines[0]
    assert signal.Signals(signal_number).name in resume_lines[0]
    # No orphan worker: nothing of the grid's process group is left once
    # multiprocessing's resource tracker has seen its parent go.
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while _group_members(grid.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _group_members(grid.pid) == []
    # The queued cell never started.
    assert not (output_dir / "mnist_small" / "conv_seed0").exists()


def test_aggregate_only_merges_an_earlier_results_json(tmp_path):
    """The committed paper-scale results, regenerated from their results.json alone."""
    committed = REPO_ROOT / "docs" / "results" / "paper_scale"
    result = _run(tmp_path, "--aggregate_only", f"--output_dir={tmp_path / 'new'}",
                  f"--results_dir={tmp_path / 'merged'}",
                  f"--merge_results={committed / 'results.json'}")
    assert result.returncode == 0, result.stderr
    for name in ("results.csv", "results.md"):
        assert (tmp_path / "merged" / name).read_text() == (committed / name).read_text()

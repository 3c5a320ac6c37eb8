"""Running the cells of a grid: one trainer run per cell, in worker processes.

Each cell is an ordinary `training.train_and_evaluate` run in its own `model_dir`
(`<output_dir>/<dataset>/<cell name>`). `run_grid` checks the grid's data once,
then runs cells in `parallel` worker processes, skips finished cells and resumes
interrupted ones (the trainer restores the latest checkpoint of a `model_dir`).
After training, the test split is evaluated once with the best-validation
checkpoint (the trainer's own `results.json` reports the test metrics of the
LAST step; when the best step is not the last one `run_cell` restores `best/`
and evaluates it) and written to `<model_dir>/cell_result.json`, with the
Keras backend, the device and the CPU count that trained it.

SIGINT (Ctrl-C) or SIGTERM stops a running grid: the workers are terminated, no
further cell starts, and `run_grid` raises `workers.GridInterrupted`. Running
the same grid again resumes it.
"""

import dataclasses
import json
import os
import time

from absl import logging
import keras
import ml_collections

from low_rank_local_connectivity import data
from low_rank_local_connectivity import devices
from low_rank_local_connectivity import training
from low_rank_local_connectivity import validation
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.experiments import grid as grid_lib
from low_rank_local_connectivity.experiments import report
from low_rank_local_connectivity.experiments import workers as workers_lib
from low_rank_local_connectivity.training import run_dir

# Config fields that do not change what a cell computes: where the data is read
# from, and how often the trainer logs and checkpoints.
_BOOKKEEPING_FIELDS = frozenset({
    "dataset.data_dir", "dataset.download", "dataset.manual_dir", "dataset.idx_dir",
    "train.log_every_steps", "train.checkpoint_every_steps",
    "train.keep_checkpoints",
})
_EXPERIMENT_SECTIONS = ("model.", "dataset.", "train.")
# A cell's log in its model_dir: the worker's output and any traceback.
_LOG_FILE = "train.log"


def run_cell(cell, config, model_dir, num_threads=None):
    """Trains a cell (resuming) and evaluates its best-validation checkpoint.

    Runs in the calling process. Test metrics: the trainer evaluates the last
    step; when the best validation step is the last step those are the test
    metrics of the best checkpoint, otherwise the best checkpoint is restored
    and the test split evaluated. The result is written atomically to
    `<model_dir>/cell_result.json`; then the cell's older checkpoints are
    deleted (`training.remove_older_checkpoints`: the newest and the best stay).

    Args:
        cell: `Cell`.
        config: experiment ConfigDict (`cell_config(cell, ...)`).
        model_dir: str.
        num_threads: optional int, the process's CPU threads
            (`devices.limit_cpu_threads`; set before anything runs, so use it
            only in a fresh process).

    Returns:
        The cell result dict: cell, config, num_parameters, train_steps,
        best_valid, test, test_at_step, train_seconds, backend (the Keras
        backend), device ('cpu' or the GPU kind) and cpu_count.
    """
    if num_threads:
        devices.limit_cpu_threads(num_threads)
    results = run_dir.RunDirectory(model_dir).read_results()
    if results is None or results["train_steps"] != config.train.train_steps:
        results = training.train_and_evaluate(config, model_dir)
    best = results["best_valid"]
    if best["step"] == results["train_steps"]:
        test = results["test"]
    else:
        test = training.evaluate_checkpoint(model_dir, "test", "best")
    cell_result = dict(
        cell=dataclasses.asdict(cell),
        config=json.loads(config.to_json_best_effort()),
        num_parameters=results["num_parameters"],
        train_steps=results["train_steps"],
        best_valid=best,
        test=test,
        test_at_step=best["step"],
        train_seconds=results["train_seconds"],
        backend=keras.backend.backend(),
        device=devices.device_kind(),
        cpu_count=os.cpu_count(),
    )
    report.write_json(
        os.path.join(model_dir, report.CELL_RESULT_FILE), cell_result
    )
    training.remove_older_checkpoints(model_dir)
    return cell_result


def experiment_differences(saved, requested):
    """The fields in which two cell configs describe different experiments.

    Compared: the seed and the `model`, `dataset` and `train` fields present in
    both configs (a field that newer code added to one of them is not a
    difference), except where the data is read from and how often the trainer
    logs and checkpoints.

    Args:
        saved, requested: configs as dicts (their JSON).

    Returns:
        List of (dotted field, saved value, requested value), sorted.
    """
    saved, requested = experiment.flatten(saved), experiment.flatten(requested)
    return [
        (key, saved[key], requested[key])
        for key in sorted(saved.keys() & requested.keys())
        if (key == "seed" or key.startswith(_EXPERIMENT_SECTIONS))
        and key not in _BOOKKEEPING_FIELDS and saved[key] != requested[key]
    ]


def _check_data(config):
    """Raises `data.DataNotFoundError` unless the grid's data is there."""
    dataset = data.resolve_config(config.dataset)
    dataset.check_files()
    dataset.metadata  # Locates the data (TFDS: prepared, or fails fast).


def _train_cell(cell_fields, config_json, model_dir, num_threads):
    """The job of a worker process: `run_cell` -> the test accuracy."""
    cell = grid_lib.Cell(**cell_fields)
    logging.info("Cell %s in %s (%s threads).", cell.name, model_dir, num_threads)
    config = ml_collections.ConfigDict(json.loads(config_json))
    return run_cell(cell, config, model_dir, num_threads)["test"]["accuracy"]


def _relative_cost(cell):
    """Rough training cost of a cell, in convolution-network units."""
    if cell.layer_type == "locally_connected":
        return 6.0
    if cell.rank is None:
        return 1.0
    return 1.0 + 0.6 * cell.rank


def _duration(seconds):
    """'42 s', '17 min', '2 h 05 min'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclasses.dataclass
class GridReport:
    """What `run_grid` did: lists of cell names."""

    finished: list
    skipped: list
    failed: dict  # cell name -> error message


class _Progress:
    """The line logged after each cell: cells done / left, elapsed time, ETA.

    The ETA extrapolates the wall time per unit of `_relative_cost` of the
    cells finished so far to the cost of the cells not done.
    """

    def __init__(self, cells):
        self._total = len(cells)
        self._cost_left = sum(_relative_cost(cell) for cell in cells)
        self._cost_done = 0.0
        self._done = 0
        self._start = time.monotonic()

    def cell_done(self, cell, finished):
        self._done += 1
        self._cost_left -= _relative_cost(cell)
        if finished:
            self._cost_done += _relative_cost(cell)
        elapsed = time.monotonic() - self._start
        text = (
            f"{self._done}/{self._total} cells done, {self._total - self._done} "
            f"left; {_duration(elapsed)} elapsed"
        )
        if self._done < self._total and self._cost_done > 0:
            eta = elapsed / self._cost_done * self._cost_left
            text += f", about {_duration(eta)} to go"
        return text


def _pending_cells(grid, output_dir, shard, dataset_location, grid_report):
    """(cell, config, model_dir) of the unfinished cells; skipped ones reported."""
    pending = []
    for cell in grid.cells()[shard]:
        model_dir = cell.model_dir(output_dir)
        config = grid_lib.cell_config(cell, grid, **dataset_location)
        done = report.read_cell_result(model_dir)
        if done is not None:
            changes = experiment_differences(
                done["config"], json.loads(config.to_json_best_effort())
            )
            if changes:
                shown = ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes[:4])
                raise ValueError(
                    f"Invalid value for argument `output_dir`: {model_dir} holds "
                    f"a finished run of cell {cell.name} with a different "
                    f"config ({shown}{' ...' if len(changes) > 4 else ''}). Use "
                    "another output_dir (or delete that run)."
                )
            grid_report.skipped.append(cell.name)
            continue
        pending.append((cell, config, model_dir))
    # Seed by seed (an interrupted grid then has whole seeds), the most
    # expensive cells of a seed first (fewer idle workers at the end).
    pending.sort(key=lambda item: (item[0].seed, -_relative_cost(item[0])))
    return pending


def run_grid(grid, output_dir, *, data_dir=None, download=False, manual_dir=None,
             idx_dir=None, parallel=1, num_shards=1, shard_index=0):
    """Runs the cells of a grid, each in its own worker process.

    The grid's data is checked once, before any cell starts. Cells run seed by
    seed, the most expensive ones of a seed first. A cell whose
    `cell_result.json` exists with the same experiment (`experiment_differences`
    finds nothing) is skipped; one whose saved config describes another
    experiment raises (use another `output_dir`); an interrupted cell resumes
    from its latest checkpoint. A failing cell (e.g. a NaN loss) is reported,
    its traceback is in its train.log, and the other cells continue. After each
    cell a progress line gives the cells done and left, the time elapsed and an
    estimate of the time left.

    Cluster fan-out: run the same grid on N machines with
    `num_shards=N, shard_index=i` (cell k belongs to shard k mod N) and a
    shared `output_dir`, then `aggregate(output_dir)` once.

    Args:
        grid: `Grid`.
        output_dir: str.
        data_dir: optional str, TFDS data_dir.
        download: bool, let TFDS download and prepare missing data (once, in
            this process, before the cells start).
        manual_dir: optional str, folder with the dataset's original files.
        idx_dir: optional str, folder of MNIST's idx files (MNIST and
            translated MNIST through the NumPy path, without TensorFlow).
        parallel: int >= 1, number of cells trained at the same time. Each
            worker gets max(1, cpu_count // parallel) CPU threads
            (`devices.limit_cpu_threads`).
        num_shards: int >= 1.
        shard_index: int in [0, num_shards).

    Returns:
        A `GridReport`.

    Raises:
        ValueError: for invalid arguments, or a finished cell whose saved
            config describes another experiment.
        data.DataNotFoundError: if the data is missing and may not,
            or could not, be downloaded.
        GridInterrupted: on SIGINT or SIGTERM (received in the main thread);
            the workers are stopped first.
    """
    parallel = validation.positive_int("parallel", parallel)
    num_shards = validation.positive_int("num_shards", num_shards)
    if not validation.is_int(shard_index) or not 0 <= shard_index < num_shards:
        raise validation.invalid_argument(
            "shard_index", shard_index, f"an integer in [0, {num_shards})"
        )

    with workers_lib.stopped_by_signals() as workers:
        return _run(grid, output_dir, parallel, slice(shard_index, None, num_shards),
                    dict(data_dir=data_dir, download=download, manual_dir=manual_dir,
                         idx_dir=idx_dir),
                    workers)


def _run(grid, output_dir, parallel, shard, dataset_location, workers):
    """The body of `run_grid`, with the grid's `workers.Workers`."""
    grid_report = GridReport(finished=[], skipped=[], failed={})
    pending = _pending_cells(grid, output_dir, shard, dataset_location, grid_report)
    if pending:
        _check_data(pending[0][1])
    logging.info(
        "%d cells: %d finished before, %d to run with %d in parallel.",
        len(grid_report.skipped) + len(pending), len(grid_report.skipped),
        len(pending), parallel,
    )
    if not pending:
        return grid_report
    num_threads = max(1, (os.cpu_count() or 1) // parallel)
    progress = _Progress([cell for cell, _, _ in pending])
    cells = {cell.name: cell for cell, _, _ in pending}
    queue = list(reversed(pending))
    while queue or len(workers):
        while queue and len(workers) < parallel:
            cell, config, model_dir = queue.pop()
            workers.start(
                cell.name, _train_cell,
                (dataclasses.asdict(cell), config.to_json_best_effort(), model_dir,
                 num_threads),
                os.path.join(model_dir, _LOG_FILE),
            )
        for name, status, value in workers.wait():
            cell = cells[name]
            if status == "finished":
                grid_report.finished.append(name)
                logging.info("Cell %s done: test accuracy %.4f (%s).", name, value,
                             progress.cell_done(cell, finished=True))
            else:
                grid_report.failed[name] = value
                logging.error(
                    "Cell %s failed (log: %s): %s (%s).", name,
                    os.path.join(cell.model_dir(output_dir), _LOG_FILE), value,
                    progress.cell_done(cell, finished=False),
                )
    return grid_report

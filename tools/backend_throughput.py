r"""Training throughput of the small presets on every Keras backend, side by side.

For each round and each backend (TensorFlow, JAX, PyTorch; the order rotates
from round to round, since this machine's speed drifts with its load), runs

    KERAS_BACKEND=<backend> lrlc-benchmark --layers= --training=<presets> ...

in a fresh process and collects, per preset, the examples/s of the trainer with
its input pipeline (TensorFlow and JAX), of its compiled step alone on one
batch in memory (TensorFlow and JAX) and of Keras `model.fit` with the same
model, optimiser and NumPy batches (every backend). JAX and PyTorch run with
TensorFlow made absent (`tests/without_tensorflow`).

    python -m tools.backend_throughput --output_dir=runs/backend_throughput

Writes `throughput.json` (every round's benchmark rows, the load averages) and
`throughput.md` (median and range over the rounds).
"""

import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_PRESETS = (
    "mnist_small_conv", "mnist_small_lrlc", "mnist_small_lrlc_input_dependent",
    "mnist_small_locally_connected",
)
MEASURES = (
    ("trainer_examples_per_second", "trainer"),
    ("step_examples_per_second", "compiled step alone"),
    ("fit_examples_per_second", "model.fit"),
)

_PRESETS = flags.DEFINE_list("presets", list(DEFAULT_PRESETS), "Experiment presets.")
_BACKENDS = flags.DEFINE_list("backends", list(BACKENDS), "Keras backends.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds (one process per backend each).")
_STEPS = flags.DEFINE_integer("steps", 20, "lrlc-benchmark --training_steps.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", str(REPO_ROOT / "runs" / "backend_throughput"),
    "Where throughput.json and throughput.md are written.",
)


def _environment(backend):
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if backend != "tensorflow":
        paths.insert(0, str(REPO_ROOT / "tests" / "without_tensorflow"))
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=os.pathsep.join(paths))


def _benchmark(backend, workdir):
    """One lrlc-benchmark process: its benchmark.json, with the load averages."""
    load_before = os.getloadavg()[0]
    command = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--layers=",
               f"--training={','.join(_PRESETS.value)}",
               f"--training_steps={_STEPS.value}", f"--output_dir={workdir}"]
    result = subprocess.run(command, env=_environment(backend), capture_output=True,
                            text=True)
    if result.returncode:
        raise RuntimeError(f"{backend} benchmark failed:\n{result.stderr[-3000:]}")
    report = json.loads((pathlib.Path(workdir) / "benchmark.json").read_text())
    report["load"] = [load_before, os.getloadavg()[0]]
    return report


def _cell(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{statistics.median(values):.0f} [{min(values):.0f}–{max(values):.0f}]"


def markdown(reports):
    lines = [
        "| preset | measure | " + " | ".join(_BACKENDS.value) + " |",
        "|---|---|" + "---|" * len(_BACKENDS.value),
    ]
    for preset in _PRESETS.value:
        for key, label in MEASURES:
            cells = []
            for backend in _BACKENDS.value:
                cells.append(_cell([
                    row[key] for report in reports if report["backend"] == backend
                    for row in report["training"] if row["preset"] == preset
                ]))
            lines.append(f"| {preset} | {label} | " + " | ".join(cells) + " |")
    loads = [value for report in reports for value in report["load"]]
    return "\n".join(lines) + (
        f"\n\nExamples/s, median [min–max] over {_ROUNDS.value} rounds; "
        f"1-minute load average {min(loads):.1f}–{max(loads):.1f}.\n")


def main(argv):
    del argv
    output_dir = pathlib.Path(_OUTPUT_DIR.value)
    output_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for round_index in range(_ROUNDS.value):
        shift = round_index % len(_BACKENDS.value)
        for backend in _BACKENDS.value[shift:] + _BACKENDS.value[:shift]:
            with tempfile.TemporaryDirectory() as workdir:
                reports.append(_benchmark(backend, workdir))
            print(f"round {round_index + 1}/{_ROUNDS.value}: {backend} done", flush=True)
            (output_dir / "throughput.json").write_text(json.dumps(dict(
                command=shlex.join(["python", "-m", "tools.backend_throughput"] + sys.argv[1:]),
                reports=reports), indent=1))
    table = markdown(reports)
    (output_dir / "throughput.md").write_text(table)
    print(table)


if __name__ == "__main__":
    app.run(main)

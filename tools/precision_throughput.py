r"""Training-step throughput of the small presets in float32 and mixed_bfloat16.

For every case -- an experiment preset of the embedded MNIST subset
(`mnist_small_<model config>`, configs/experiment.py), optionally with config
overrides -- and every precision, builds the training task the trainer runs
(`training.create_task`) and times its compiled training step with
`measure_step_throughput` (one batch held in memory, no input pipeline). All
tasks live in one process and are timed in interleaved rounds, the order of
the precisions alternating from round to round, because this machine's speed
drifts with its load; the 1-minute load average is recorded with every
measurement.

    python -m tools.precision_throughput --output_dir=runs/precision

Writes `throughput.json` (every measurement) and `throughput.md` (per case and
precision the median and range of examples/s over the rounds, the median of
the per-round ratios to the first precision, the load average). With
`--layer_benchmark_dir`, the ratio table of a `scripts/benchmark.py` run
(e.g. `--mixed_precision=mixed_bfloat16`) is added to the markdown with the
command that made it.
"""

import ast
import json
import os
import pathlib
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATASET = "mnist_small"
DEFAULT_CASES = (
    "conv", "lrlc:model.spatial_rank=4", "locally_connected", "lrlc_input_dependent",
    "wide_conv", "coord_conv",
)

_CASES = flags.DEFINE_list(
    "cases", list(DEFAULT_CASES),
    f"Model configs of the {DATASET}_<model config> presets, each optionally "
    "followed by ':key=value' config overrides, e.g. lrlc:model.spatial_rank=4.",
)
_PRECISIONS = flags.DEFINE_list(
    "precisions", ["float32", "mixed_bfloat16"],
    "Values of config.train.mixed_precision; ratios are to the first.",
)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed training steps per measurement.")
_WARMUP_STEPS = flags.DEFINE_integer(
    "warmup_steps", 3, "Untimed steps per task before the first round.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", str(REPO_ROOT / "runs" / "precision_throughput"),
    "Where throughput.json and throughput.md are written.",
)
_LAYER_BENCHMARK_DIR = flags.DEFINE_string(
    "layer_benchmark_dir", None,
    "Output directory of a scripts/benchmark.py run whose ratio table is "
    "included in the markdown.",
)


def parse_case(text):
    """'model:key=value:...' -> (model config name, {dotted key: value})."""
    model, *assignments = text.split(":")
    overrides = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise app.UsageError(
                f"--cases: expected model:key=value, got {text!r}")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return model, overrides


def load_average():
    """The 1-minute load average (None where the OS does not report it)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cpu_description():
    """The CPU model and its bfloat16 instruction sets, from /proc/cpuinfo."""
    from low_rank_local_connectivity import devices

    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((value.strip() for key, _, value in
                  (line.partition(":") for line in text.splitlines())
                  if key.strip() == "model name"), "unknown CPU")
    bf16 = devices.cpu_bfloat16_instructions() or []
    return f"{model} ({', '.join(bf16) or 'no bfloat16 instructions'})"


def build_tasks(cases, precisions):
    """{(case, precision): training task}, each warmed up (the first step traces)."""
    from low_rank_local_connectivity import training
    from low_rank_local_connectivity.configs import experiment

    tasks = {}
    for case in cases:
        model, overrides = parse_case(case)
        for precision in precisions:
            config = experiment.get_config(f"{DATASET}_{model}")
            config.update_from_flattened_dict(
                dict(overrides, **{"train.mixed_precision": precision}))
            training.validate_config(config)
            task = training.create_task(config)
            task.measure_step_throughput(num_steps=1, warmup_steps=_WARMUP_STEPS.value)
            tasks[(case, precision)] = task
    return tasks


def measure(tasks, cases, precisions, rounds, steps):
    """Rows {case, precision, round, examples_per_second, load_average}."""
    rows = []
    for round_index in range(rounds):
        order = precisions if round_index % 2 == 0 else precisions[::-1]
        for case in cases:
            for precision in order:
                load = load_average()
                rate = tasks[(case, precision)].measure_step_throughput(
                    num_steps=steps, warmup_steps=0)
                rows.append(dict(case=case, precision=precision, round=round_index,
                                 examples_per_second=rate, load_average=load))
                print(f"round {round_index} {case} {precision}: {rate:.0f} examples/s "
                      f"(load {load})", flush=True)
    return rows


def summarize(rows, cases, precisions):
    """Per case: median / min / max per precision, per-round ratios, load range."""
    summary = []
    for case in cases:
        rates = {
            p: [r["examples_per_second"] for r in rows
                if r["case"] == case and r["precision"] == p]
            for p in precisions
        }
        loads = [r["load_average"] for r in rows
                 if r["case"] == case and r["load_average"] is not None]
        entry = dict(case=case, load_average=[min(loads), max(loads)] if loads else None)
        for p in precisions:
            entry[p] = dict(median=statistics.median(rates[p]), min=min(rates[p]),
                            max=max(rates[p]))
        base = rates[precisions[0]]
        entry["ratios"] = {
            p: statistics.median(a / b for a, b in zip(rates[p], base))
            for p in precisions[1:]
        }
        summary.append(entry)
    return summary


def markdown(report, layer_benchmark):
    precisions = report["precisions"]
    lines = [
        f"# Training-step throughput: {' vs '.join(precisions)}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"TensorFlow {report['tensorflow']}, Keras {report['keras']}, "
        f"{report['cpu_count']} CPU cores, {report['cpu']}; {report['date']}. "
        f"Batch {report['batch_size']}; {report['steps']} timed steps per "
        f"measurement, {report['rounds']} interleaved rounds.",
        "",
        "Each cell: median examples/s of the trainer's compiled training step "
        "(`measure_step_throughput` of `training.create_task`, one batch in memory) "
        "over the rounds, "
        "[min–max]. Ratio: median over rounds of the per-round ratio to "
        f"{precisions[0]}. Load: 1-minute load average during the case (min–max).",
        "",
        "| case | " + " | ".join(f"{p} examples/s" for p in precisions)
        + "".join(f" | {p} / {precisions[0]}" for p in precisions[1:]) + " | load |",
        "|" + "---|" * (2 + 2 * len(precisions) - 1),
    ]
    for entry in report["summary"]:
        cells = [
            f"{entry[p]['median']:.0f} [{entry[p]['min']:.0f}–{entry[p]['max']:.0f}]"
            for p in precisions
        ]
        cells += [f"x{entry['ratios'][p]:.2f}" for p in precisions[1:]]
        load = entry["load_average"]
        cells.append("" if load is None else f"{load[0]:.1f}–{load[1]:.1f}")
        lines.append(f"| {entry['case']} | " + " | ".join(cells) + " |")
    if layer_benchmark:
        lines += [
            "",
            "## Layer benchmark (`scripts/benchmark.py`, "
            f"{layer_benchmark['mixed_precision']})",
            "",
            f"Command: `{layer_benchmark['command']}`",
            "",
            "Forward+backward time of each layer divided by that of Conv2D(K·F) "
            "(conv_kf, its time in ms in the 4th column), median of per-round ratios.",
            "",
            layer_benchmark["ratio_table"],
        ]
    return "\n".join(lines) + "\n"


def read_layer_benchmark(directory):
    """The precision, command and ratio table (first table) of a benchmark run."""
    directory = pathlib.Path(directory)
    report = json.loads((directory / "benchmark.json").read_text())
    ratio_table = (directory / "benchmark.md").read_text().split("\n\n")[0].strip()
    return dict(mixed_precision=report.get("mixed_precision", "float32"),
                command=report.get("command", "(not recorded)"),
                ratio_table=ratio_table)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _ROUNDS.value < 1 or _STEPS.value < 1 or _WARMUP_STEPS.value < 1:
        raise app.UsageError("--rounds, --steps and --warmup_steps must be >= 1")
    cases, precisions = list(_CASES.value), list(_PRECISIONS.value)
    for case in cases:
        parse_case(case)
    layer_benchmark = (
        read_layer_benchmark(_LAYER_BENCHMARK_DIR.value)
        if _LAYER_BENCHMARK_DIR.value else None
    )
    import keras
    import tensorflow as tf

    tasks = build_tasks(cases, precisions)
    batch_size = next(iter(tasks.values())).config.train.batch_size
    rows = measure(tasks, cases, precisions, _ROUNDS.value, _STEPS.value)
    report = dict(
        command=shlex.join(["python", "-m", "tools.precision_throughput"] + sys.argv[1:]),
        tensorflow=tf.__version__, keras=keras.__version__, cpu=cpu_description(),
        cpu_count=os.cpu_count(), date=time.strftime("%Y-%m-%d"),
        batch_size=batch_size, steps=_STEPS.value, rounds=_ROUNDS.value,
        precisions=precisions, cases=cases, rows=rows,
        summary=summarize(rows, cases, precisions),
    )
    out = pathlib.Path(_OUTPUT_DIR.value)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "throughput.md").write_text(markdown(report, layer_benchmark))
    print((out / "throughput.md").read_text())
    print(f"Wrote {out / 'throughput.json'} and {out / 'throughput.md'}")


if __name__ == "__main__":
    app.run(main)

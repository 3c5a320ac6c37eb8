"""Fine-tuning a finished run, with its convolutions turned into LRLC layers or not.

`finetune_config` turns the config of a finished trainer run into the config of a
new run that starts from one of its checkpoints (`init_from`) and, when asked,
converts the model (`model.convert`, see `convert.to_lrlc`). The trainer then
fine-tunes it like any other run: resumable, with its own checkpoints and export.

`run_comparison` is the experiment behind the README's conversion table: per seed
it trains a base convolutional network, then fine-tunes it for the same number of
steps once as it is ('conv': continuing to train the convolution) and once per
converted variant, and `write_results` reports the test accuracies (mean ±
standard error over seeds, and the paired gain of each variant over 'conv'). A
gain is called separable when it exceeds twice its standard error, and not
separable otherwise.
"""

import csv
import io
import json
import os

import ml_collections

from low_rank_local_connectivity import training
from low_rank_local_connectivity.experiments import report
from low_rank_local_connectivity.experiments import stats
from low_rank_local_connectivity.training import run_dir

BASELINE_ARM = "conv"
START_FILE = "start_metrics.json"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CSV_FIELDS = (
    "seed", "arm", "num_parameters", "base_test_accuracy", "start_test_accuracy",
    "test_accuracy", "valid_accuracy", "train_seconds",
)


def finetune_config(source_dir, *, conversion=None, checkpoint="latest",
                    train_steps=None, learning_rate=None, seed=None, data_dir=None):
    """The config of a run that fine-tunes a finished run.

    Args:
        source_dir: str, the model_dir of a finished trainer run.
        conversion: None (keep the architecture) or keyword arguments of
            `convert.to_lrlc` with `spatial_rank`; `seed` defaults to the run's.
        checkpoint: the source checkpoint: 'latest', 'best' or a prefix.
        train_steps: int, the fine-tuning steps (default: the source run's).
            The evaluation, checkpoint and warm-up periods are capped at it.
        learning_rate: float, the peak learning rate (default: the source's).
        seed: int, seeds the data order and the conversion (default: the
            source's).
        data_dir: str, the TFDS data_dir (default: the source's).

    Returns:
        An `ml_collections.ConfigDict` for `training.train_and_evaluate`: the
        source's config with `init_from` set, and `model.convert` when converting.

    Raises:
        ValueError: if `source_dir` holds no run, or its model is itself
            converted (fine-tune it by training it further instead).
    """
    try:
        run = training.open_run(source_dir)
    except ValueError:
        raise ValueError(
            "Invalid value for argument `source_dir`. Expected the model_dir of "
            f"a trainer run (with {run_dir.CONFIG_FILE}). Received: "
            f"source_dir={source_dir!r}"
        ) from None
    config = run.config
    if config.model.get("convert") is not None:
        raise ValueError(
            f"Invalid value for argument `source_dir`: the model of {source_dir!r} "
            "is already converted (model.convert is set); train that run further "
            "instead of converting it again."
        )
    run.checkpoint_path(checkpoint)  # Fails early when missing.
    config.init_from = ml_collections.ConfigDict(
        dict(model_dir=os.path.abspath(source_dir), checkpoint=checkpoint)
    )
    if seed is not None:
        config.seed = seed
    if data_dir is not None:
        config.dataset.data_dir = data_dir
    if conversion is not None:
        conversion = dict(conversion)
        conversion.setdefault("seed", config.seed)
        config.model.convert = conversion
        config.preset = f"{config.get('preset')}_to_lrlc{conversion.get('spatial_rank')}"
    train = config.train
    if train_steps is not None:
        train.train_steps = train_steps
    for field in ("eval_every_steps", "checkpoint_every_steps"):
        train[field] = min(train[field], train.train_steps)
    train.schedule.warmup_steps = min(train.schedule.warmup_steps, train.train_steps)
    if learning_rate is not None:
        train.optimizer.learning_rate = learning_rate
    training.validate_config(config)
    return config


def comparison_arms(spatial_rank=2, input_dependent=False):
    """{arm name: conversion or None} of `run_comparison`.

    'conv' continues the convolutional network; 'lrlc<K>' converts every
    convolution to an LRLC layer of rank K with fixed combining weights;
    'lrlc<K>_input_dependent' (optional) with input-dependent ones.
    """
    arms = {BASELINE_ARM: None, f"lrlc{spatial_rank}": dict(spatial_rank=spatial_rank)}
    if input_dependent:
        arms[f"lrlc{spatial_rank}_input_dependent"] = dict(
            spatial_rank=spatial_rank, input_dependent=True
        )
    return arms


class RecordStartMetrics(training.Callback):
    """Writes the test metrics of a new run's model before its first step.

    They go to `<model_dir>/START_FILE`, once: a resumed run keeps them.
    """

    def on_train_begin(self, controller):
        path = os.path.join(controller.model_dir, START_FILE)
        if controller.step == 0 and not os.path.exists(path):
            report.write_json(path, controller.evaluate("test", record=False))


def _train(config, model_dir, record_start=False):
    """Trains a run to the end (or reads its results) -> results dict.

    With `record_start`, the test metrics of the model before its first step
    are written to `START_FILE` (once) and added as 'start_test'.
    """
    results = run_dir.RunDirectory(model_dir).read_results()
    if results is None or results["train_steps"] != config.train.train_steps:
        callbacks = [RecordStartMetrics()] if record_start else []
        results = training.train_and_evaluate(config, model_dir, callbacks=callbacks)
    if record_start:
        with open(os.path.join(model_dir, START_FILE)) as f:
            results["start_test"] = json.load(f)
    return results


def run_comparison(base_config, output_dir, *, seeds, finetune_steps, arms):
    """Trains a base run per seed and fine-tunes it once per arm.

    Runs live in `<output_dir>/seed<s>/base` and `<output_dir>/seed<s>/<arm>`;
    finished runs are reused and interrupted ones resume. Every arm starts from
    the base run's latest checkpoint with a fresh optimiser and the base
    recipe's schedule over `finetune_steps`, validating only at the end.

    Args:
        base_config: experiment ConfigDict of the base run (its seed is replaced).
        output_dir: str.
        seeds: list of ints.
        finetune_steps: int, the steps of every arm.
        arms: {name: conversion or None}, e.g. `comparison_arms()`.

    Returns:
        A list of rows (dicts with the `CSV_FIELDS`), seed-major.
    """
    rows = []
    for seed in seeds:
        config = ml_collections.ConfigDict(base_config.to_dict())
        config.seed = seed
        base_dir = os.path.join(output_dir, f"seed{seed}", "base")
        base = _train(config, base_dir)
        for arm, conversion in arms.items():
            config = finetune_config(
                base_dir, conversion=conversion, train_steps=finetune_steps
            )
            config.train.eval_every_steps = finetune_steps
            results = _train(
                config, os.path.join(output_dir, f"seed{seed}", arm), record_start=True
            )
            rows.append(dict(
                seed=seed, arm=arm, num_parameters=results["num_parameters"],
                base_test_accuracy=base["test"]["accuracy"],
                start_test_accuracy=results["start_test"]["accuracy"],
                test_accuracy=results["test"]["accuracy"],
                valid_accuracy=results["best_valid"]["metrics"]["accuracy"],
                train_seconds=results["train_seconds"],
            ))
    return rows


def summarize(rows):
    """Per arm: test accuracy mean ± standard error, and the paired gain over 'conv'.

    The gain of an arm is the mean ± standard error over seeds of its test
    accuracy minus that of 'conv' fine-tuned from the same base run.
    """
    baseline = {row["seed"]: row for row in rows if row["arm"] == BASELINE_ARM}
    summaries = []
    for arm in dict.fromkeys(row["arm"] for row in rows):
        runs = [row for row in rows if row["arm"] == arm]
        summary = dict(arm=arm, num_seeds=len(runs),
                       seeds=[row["seed"] for row in runs],
                       num_parameters=runs[0]["num_parameters"])
        for key in ("base_test_accuracy", "start_test_accuracy", "test_accuracy"):
            mean, se = stats.mean_and_standard_error([row[key] for row in runs])
            summary[f"{key}_mean"], summary[f"{key}_se"] = mean, se
        if arm != BASELINE_ARM and all(row["seed"] in baseline for row in runs):
            mean, se = stats.mean_and_standard_error([
                row["test_accuracy"] - baseline[row["seed"]]["test_accuracy"]
                for row in runs
            ])
            summary["gain_mean"], summary["gain_se"] = mean, se
        summaries.append(summary)
    return summaries


def _gain_text(summary):
    if "gain_mean" not in summary:
        return "—"
    mean, se = 100 * summary["gain_mean"], 100 * summary["gain_se"]
    return f"{mean:+.2f} ± {se:.2f} ({stats.separability(mean, se)})"


def render_markdown(summaries, finetune_steps):
    """A markdown table of `summarize`'s output (accuracies in %)."""
    lines = [
        (
            s["arm"], f"{s['num_parameters']:,}",
            stats.format_accuracy(s["start_test_accuracy_mean"],
                                  s["start_test_accuracy_se"]),
            stats.format_accuracy(s["test_accuracy_mean"], s["test_accuracy_se"]),
            _gain_text(s),
        )
        for s in summaries
    ]
    header = ("fine-tuned as", "parameters", "test acc before (%)",
              f"test acc after {finetune_steps} steps (%)", "gain over conv (points)")
    return report.markdown_table(header, lines) + "\n"


def write_results(rows, results_dir, settings):
    """Writes results.csv, results.json (rows, summaries, settings) and results.md.

    Returns:
        The list of paths written.
    """
    os.makedirs(results_dir, exist_ok=True)
    summaries = summarize(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return [
        report.write_text(os.path.join(results_dir, RESULTS_CSV), buffer.getvalue()),
        report.write_json(
            os.path.join(results_dir, RESULTS_JSON),
            dict(settings=settings, runs=rows,
                 summaries=report.json_safe(summaries)),
        ),
        report.write_text(
            os.path.join(results_dir, RESULTS_MD),
            render_markdown(summaries, settings["finetune_steps"]),
        ),
    ]

"""Fault-injection and bad-input campaign of the trainer, export and CLI.

Trains LRLC models on the embedded 'mnist_small' dataset, once without
faults (the reference) and many times with faults, and checks that nothing
recorded is lost. Two models: the preset's DEFAULT network (64 filters, batch
norm, global pooling: what users run) for the preemption section, and a tiny one
(8 filters, no global pooling) that keeps the other sections fast:

- preemption: >= `--default_model_kills` SIGKILLs on the default model and
  >= `--kills` on the tiny one, at random moments aimed at a training
  step, a checkpoint write, an evaluation or an export (the phase each kill
  actually landed in is recorded); every run restarts on its `model_dir`
  until it finishes, then must equal the reference of its model (final step,
  every metrics.jsonl line, best checkpoint, final weights and optimiser
  slots, export) with no half-written checkpoint left
  (`tools/campaign_faults.py`, like the next four);
- corrupted newest checkpoint (truncated / flipped bytes / truncated index /
  missing data), all checkpoints corrupted;
- a second trainer on a live `model_dir`, a stale lock after a SIGKILL;
- checkpoint directory not writable, disk full (a small tmpfs when this
  process may mount one, else a simulated ENOSPC);
- NaN loss;
- bad input (`tools/campaign_bad_inputs.py`): command-line errors, wrong
  image shape, corrupted TFRecord shard and missing split (real MNIST, when
  `--tfds_dir` has it), wrong dtype / rank / size at the SavedModel serving
  signature.

`tools/campaign_runs.py` runs the children and compares a run with its
reference. A check that cannot run here (no real MNIST, no way to make a
directory unwritable as root) is reported as skipped with its reason, never
as survived. Progress goes to stdout: a line when each scenario starts and
finishes, one per kill, and a 'still running' line after 30 s of silence.

Prints a summary table (fault, injected, survived, data lost) and writes
`fault_campaign.json` and `fault_campaign.md` to `--output_dir`; exits with
an error line when a fault was not survived. Minutes on 2 CPU cores (see the
README's Reliability section); it mounts a small tmpfs for the disk-full case
when run as root, and otherwise simulates ENOSPC in the checkpoint writer:

    python -m tools.fault_campaign --output_dir=/tmp/fault_campaign

Training is bit-deterministic (`train.deterministic`), so a resumed run must
equal the reference exactly.
"""

import concurrent.futures
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

from tools import campaign_bad_inputs
from tools import campaign_faults
from tools import campaign_progress
from tools import campaign_report
from tools import campaign_runs

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "/tmp/lrlc_fault_campaign",
    "Where the runs, fault_campaign.json and fault_campaign.md are written "
    "(emptied first).",
)
_KILLS = flags.DEFINE_integer(
    "kills", 12, "Minimum number of SIGKILLs fired at runs of the tiny model.")
_DEFAULT_MODEL_KILLS = flags.DEFINE_integer(
    "default_model_kills", 20,
    "Minimum number of SIGKILLs fired at runs of the preset's default model.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Child processes run at once.")
_TFDS_DIR = flags.DEFINE_string(
    "tfds_dir",
    str(campaign_runs.REPO_ROOT.parent / "shared" / "data" / "tensorflow_datasets"),
    "A TFDS data_dir with real MNIST for the corrupted-shard and missing-split "
    "checks (skipped, saying so, when absent).",
)


def _checkpoint_faults(workspace, progress):
    """(corrupted-checkpoint rows, write-failure rows): both on copies of
    one run killed after step 26."""
    base = workspace.root / "corrupt_base"
    return (progress.scenario("corrupted checkpoints",
                              campaign_faults.corrupted_checkpoints, workspace, base),
            progress.scenario("write failures",
                              campaign_faults.write_failures, workspace, base))


def run_campaign(workspace, progress, *, kills, seed, workers, tfds_dir):
    """Runs every scenario; returns (report rows, the `Preemption`).

    Raises:
        RuntimeError: when a reference run fails.
    """
    for model in campaign_runs.MODELS:
        name = f"reference run of the {campaign_runs.MODEL_LABELS[model]}"
        progress.started(name)
        workspace.reference(model)
        progress.finished(name)
    preemption = campaign_faults.Preemption(workspace, seed, kills, progress)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        preempting = [
            pool.submit(preemption.worker, w, (count + w) // workers, model)
            for model, count in kills.items() for w in range(workers)
            if (count + w) // workers
        ]
        checkpoints = pool.submit(_checkpoint_faults, workspace, progress)
        others = [
            pool.submit(progress.scenario, name, function, workspace, *args)
            for name, function, *args in (
                ("concurrent trainers", campaign_faults.concurrent_trainers),
                ("NaN loss", campaign_faults.nan_loss),
                ("command-line errors", campaign_bad_inputs.bad_cli),
                ("bad data", campaign_bad_inputs.bad_data, tfds_dir),
            )
        ]
        for future in preempting:
            future.result()
        corrupted, writes = checkpoints.result()
        concurrent_, nan, cli, data = (future.result() for future in others)
    serving = progress.scenario("bad serving inputs",
                                campaign_bad_inputs.bad_serving_inputs, workspace)
    kill_rows = [row for model in kills for row in preemption.rows(model)]
    rows = (kill_rows + preemption.failures + corrupted + concurrent_ + writes + nan
            + cli + data + serving)
    return rows, preemption


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    start = time.time()
    workspace = campaign_runs.Workspace(_OUTPUT_DIR.value)
    if workspace.root.exists():
        shutil.rmtree(workspace.root)
    workspace.root.mkdir(parents=True)
    progress = campaign_progress.Progress()
    progress.say(f"Fault campaign in {workspace.root} (logs: <run name>.log)")
    kills = {"default": _DEFAULT_MODEL_KILLS.value, "tiny": _KILLS.value}
    try:
        rows, preemption = run_campaign(
            workspace, progress, kills=kills, seed=_SEED.value,
            workers=max(1, _WORKERS.value), tfds_dir=_TFDS_DIR.value)
    finally:
        progress.close()
    summary = campaign_report.summarize(
        rows, preemption.kills, preemption.runs, time.time() - start,
        f"python -m tools.fault_campaign --kills={_KILLS.value} "
        f"--default_model_kills={_DEFAULT_MODEL_KILLS.value} --seed={_SEED.value}",
        machine=dict(cpu_cores=os.cpu_count(), load_average=progress.load_average()))
    report = dict(summary=summary, rows=rows, kills=preemption.kills,
                  runs=preemption.runs)
    (workspace.root / "fault_campaign.json").write_text(
        json.dumps(report, indent=2, default=str))
    text = campaign_report.markdown(rows, summary)
    (workspace.root / "fault_campaign.md").write_text(text)
    print(text)
    failed = campaign_report.not_survived(rows)
    if failed:
        sys.exit(f"error: not survived: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)

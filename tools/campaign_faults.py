"""Trainer faults of the campaign: SIGKILLs, corrupted checkpoints, locks,
write failures and a NaN loss.

Each scenario takes the `campaign_runs.Workspace` (and, for the checkpoint
faults, a `model_dir` killed after 26 steps) and returns report rows; a run
that finishes after a fault must equal its model's reference
(`campaign_runs.compare`).
"""

import os
import random
import shutil
import subprocess
import threading
import time

from tools import campaign_report as report
from tools import campaign_runs as runs
from tools import child_run
from tools import fault_injection as fi

# Kill aim per phase: (largest occurrence, largest delay in seconds).
KILL_AIM = {
    "step": (8, 0.05), "checkpoint": (4, 0.05),
    "evaluation": (3, 0.3), "export": (1, 2.0),
}
# Restarted model_dirs per preemption worker at most.
MAX_RUNS_PER_WORKER = 20


def kill_survived(kill):
    """A kill survived: its run ended equal to the reference, resumed from the
    newest readable checkpoint, and left every checkpoint readable."""
    return kill["run_ok"] and kill["resumed_from_newest"] and not kill["unreadable"]


class Preemption:
    """SIGKILLs at random moments of runs, each run restarted until it finishes.

    Args:
        workspace: `campaign_runs.Workspace`.
        seed: int, seed of the kill moments.
        kills: dict, model name -> the number of kills to fire at it.
        progress: `campaign_progress.Progress`.

    Attributes:
        kills, runs: lists of the kill and run records.
        failures: list of report rows, one per worker that raised.
    """

    def __init__(self, workspace, seed, kills, progress):
        self.workspace = workspace
        self.seed = seed
        self.targets = dict(kills)
        self.progress = progress
        self.kills = []
        self.runs = []
        self.failures = []
        self._fired = {model: 0 for model in kills}
        self._lock = threading.Lock()

    def worker(self, worker, kills, model):
        """Runs model_dirs of `model` with kills until `kills` have fired.

        The target phase rotates over `fi.PHASES` (starting at `worker`) and
        moves on only when a kill fired, so that every phase gets its share.
        """
        name = f"preemption of the {runs.MODEL_LABELS[model]}, worker {worker}"
        self.progress.started(name)
        worker_kills = []
        try:
            self._run_worker(worker, kills, model, worker_kills)
        except Exception:  # Reported as a failed check; the others go on.
            failure = self.progress.failure(name)
            with self._lock:
                self.failures.append(failure)
        self.progress.finished(name, len(worker_kills),
                               sum(map(kill_survived, worker_kills)))

    def _run_worker(self, worker, kills, model, worker_kills):
        rng = random.Random(self.seed * 1000 + worker)
        phase_index = worker
        fired = 0
        run_index = 0
        while fired < kills and run_index < MAX_RUNS_PER_WORKER:
            model_dir = self.workspace.root / f"preempt_{model}_w{worker}_r{run_index}"
            spec = runs.spec(model_dir, model, export=True)
            run_kills = []
            attempts = 0
            while True:
                attempts += 1
                phase = fi.PHASES[phase_index % len(fi.PHASES)]
                spec["kill"] = (fi.random_kill(rng, phase, *KILL_AIM[phase])
                                if fired < kills else None)
                code, stderr = runs.child(spec, self.workspace.log(model_dir.name))
                events = fi.read_records(spec["record"])
                starts = [e for e in events if e["event"] == "start"]
                if run_kills:  # The kill before this attempt: did it resume right?
                    run_kills[-1]["restored_step"] = starts[-1]["restored_step"] \
                        if starts else None
                if code != -9 or len(run_kills) == sum(
                        1 for e in events if e["event"] == "kill"):
                    break  # Finished, failed, or killed by someone else.
                run_kills.append(self._kill_record(model_dir, model, events))
                fired += 1
                phase_index += 1
            problems = [] if code == 0 else [f"exit {code}: {stderr[-500:]}"]
            problems += runs.compare(model_dir, self.workspace.refs[model])
            for kill in run_kills:
                kill["run_ok"] = not problems
                kill["resumed_from_newest"] = (
                    kill["restored_step"] == kill["newest_valid_step"])
            self.progress.say(
                f"{model_dir.name}: {len(run_kills)} kills, "
                + ("equal to the reference" if not problems
                   else f"NOT equal to the reference: {'; '.join(problems)[:300]}"))
            with self._lock:
                self.kills += run_kills
                self.runs.append(dict(run=model_dir.name, attempts=attempts,
                                      kills=len(run_kills), problems=problems))
            worker_kills += run_kills
            run_index += 1

    def _kill_record(self, model_dir, model, events):
        kill = [e for e in events if e["event"] == "kill"][-1]
        newest, latest = runs.newest_valid_step(str(model_dir))
        best = fi.checkpoint_report(str(model_dir / "best"))
        with self._lock:
            self._fired[model] += 1
            count = self._fired[model]
        self.progress.say(
            f"kill {count}/{self.targets[model]} ({runs.MODEL_LABELS[model]}): "
            f"aimed at {kill['target']}, landed in {kill['landed']} after "
            f"{kill['step']} steps ({model_dir.name}; newest readable checkpoint: "
            f"step {newest})")
        return dict(
            run=model_dir.name, model=model, target=kill["target"],
            landed=kill["landed"], step=kill["step"], newest_valid_step=newest,
            partial_files=latest["partial"] + best["partial"],
            unreadable=dict(latest["unreadable"], **best["unreadable"]),
            export_marker=(model_dir / "export" / "serving_metadata.json").exists(),
        )

    def rows(self, model):
        """Report rows of the kills fired at `model`, one per landed phase."""
        rows = []
        for phase in (*fi.PHASES, "other"):
            landed = [k for k in self.kills if k["landed"] == phase and k["model"] == model]
            if not landed:
                continue
            rows.append(report.row(
                (f"SIGKILL mid-{phase}" if phase != "other"
                 else "SIGKILL between phases") + f" ({runs.MODEL_LABELS[model]})",
                injected=len(landed), survived=sum(map(kill_survived, landed)),
                data_lost=sum(1 for k in landed if not k["run_ok"] or k["unreadable"]),
                details=dict(
                    aimed_at={p: sum(1 for k in landed if k["target"] == p)
                              for p in fi.PHASES},
                    partial_files_left_then_removed=sum(
                        len(k["partial_files"]) for k in landed),
                    steps_redone=sum(max(0, (k["step"] or 0) - k["newest_valid_step"])
                                     for k in landed),
                ),
            ))
        return rows


def kill_after_step(workspace, model_dir, step):
    """Trains in `model_dir` until a SIGKILL after `step` steps (checkpoints
    every 5).

    Raises:
        RuntimeError: when the child was not killed.
    """
    spec = runs.spec(model_dir, kill=dict(phase="step", occurrence=step + 1, delay=0))
    code, stderr = runs.child(spec, workspace.log(model_dir.name))
    if code != -9:
        raise RuntimeError(f"{model_dir.name}: expected a kill, got {code}: "
                           f"{stderr[-2000:]}")


def corrupted_checkpoints(workspace, base):
    """Kills a run in `base` after step 26 (ckpt-15, 20, 25 kept), then
    corrupts copies: each corruption of the newest checkpoint, then all three.
    `write_failures` reuses `base`."""
    kill_after_step(workspace, base, 26)
    rows = []
    for mode in fi.CORRUPTIONS:
        model_dir = workspace.root / f"corrupt_{mode}"
        shutil.copytree(base, model_dir)
        fi.corrupt_checkpoint(str(model_dir / "checkpoints" / "ckpt-25"), mode)
        spec = runs.spec(model_dir, export=True)
        code, stderr = runs.child(spec, workspace.log(model_dir.name))
        start = [e for e in fi.read_records(spec["record"]) if e["event"] == "start"]
        said = "is unreadable" in stderr and "falling back" in stderr
        restored = start[-1]["restored_step"] if start else None
        corrupted = model_dir / "checkpoints" / "corrupted"
        quarantined = sorted(os.listdir(corrupted)) if corrupted.exists() else []
        problems = runs.compare(model_dir, workspace.ref) if code == 0 else [stderr[-300:]]
        ok = code == 0 and said and restored == 20 and quarantined and not problems
        rows.append(report.row(
            f"Corrupted newest checkpoint ({mode})", 1, ok, bool(problems),
            dict(restored_step=restored, said_so=said, quarantined=quarantined,
                 problems=problems),
        ))
    model_dir = workspace.root / "corrupt_all"
    shutil.copytree(base, model_dir)
    for step in (15, 20, 25):
        fi.corrupt_checkpoint(str(model_dir / "checkpoints" / f"ckpt-{step}"),
                              "flip_data", seed=step)
    before = runs.snapshot(model_dir / "checkpoints")
    code, stderr = runs.train_cli(model_dir, workspace.log(model_dir.name))
    untouched = runs.snapshot(model_dir / "checkpoints") == before
    ok = runs.one_line_error(code, stderr, "No checkpoint in", "is readable") and untouched
    rows.append(report.row(
        "All checkpoints corrupted", 1, ok, not untouched,
        dict(code=code, error=runs.error_lines(stderr), untouched=untouched),
    ))
    return rows


def concurrent_trainers(workspace):
    """A second trainer on a live model_dir; a stale lock after a SIGKILL."""
    rows = []
    model_dir = workspace.root / "concurrent"
    spec = runs.spec(model_dir, step_sleep=0.15)
    first = child_run.start(spec, workspace.log(model_dir.name))
    deadline = time.time() + runs.CHILD_TIMEOUT
    while not [e for e in fi.read_records(spec["record"]) if e["event"] == "start"] \
            or not (model_dir / "lock.json").exists():
        if first.poll() is not None or time.time() > deadline:
            break
        time.sleep(0.2)
    code, stderr = runs.train_cli(model_dir, workspace.log("concurrent_second"))
    refused = runs.one_line_error(code, stderr, "in use by another trainer")
    try:
        first_code = first.wait(timeout=runs.CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        first.kill()
        first_code = runs.TIMED_OUT
    problems = runs.compare(model_dir, workspace.ref, export=False) if first_code == 0 \
        else [f"first trainer exited {first_code}"]
    rows.append(report.row(
        "Second trainer on a live model_dir", 1, refused and not problems,
        bool(problems),
        dict(second_exit=code, error=runs.error_lines(stderr), problems=problems),
    ))
    model_dir = workspace.root / "stale_lock"
    spec = runs.spec(model_dir, kill=dict(phase="step", occurrence=12, delay=0))
    killed, _ = runs.child(spec, workspace.log(model_dir.name))
    if not (model_dir / "lock.json").exists():
        rows.append(report.skipped_row(
            "Stale lock after SIGKILL",
            f"the run meant to be killed left no lock.json (exit {killed})"))
        return rows
    spec.pop("kill")
    code, stderr = runs.child(spec, workspace.log(model_dir.name))
    took_over = "Taking over the stale lock" in stderr
    problems = runs.compare(model_dir, workspace.ref, export=False) if code == 0 \
        else [stderr[-300:]]
    rows.append(report.row(
        "Stale lock after SIGKILL", 1, took_over and not problems, bool(problems),
        dict(lock_left=True, took_over=took_over, problems=problems),
    ))
    return rows


def _write_failure(model_dir, train, fragments, how):
    """`train()` fails writing a checkpoint; then the run finishes normally.

    Survived: one clear error line with `fragments`, earlier checkpoints
    unchanged, no partial file, and the finished run equals the reference.
    """
    before = runs.snapshot(model_dir / "checkpoints")
    code, stderr = train()
    after = runs.snapshot(model_dir / "checkpoints")
    intact = all(after.get(k) == v for k, v in before.items()
                 if k.startswith("ckpt-") or k == "checkpoint")
    partial = fi.partial_checkpoint_files(str(model_dir / "checkpoints"))
    clear = runs.one_line_error(code, stderr, *fragments)
    return dict(
        intact=intact, partial=partial, clear=clear,
        details=dict(simulation=how, exit=code, error=runs.error_lines(stderr),
                     previous_intact=intact, partial_left=partial),
    )


def _finished_row(workspace, fault, model_dir, failure):
    code, stderr = runs.child(runs.spec(model_dir, export=True),
                              workspace.log(model_dir.name))
    problems = runs.compare(model_dir, workspace.ref) if code == 0 else [stderr[-300:]]
    ok = failure["clear"] and failure["intact"] and not failure["partial"]
    return report.row(fault, 1, ok and not problems,
                      not failure["intact"] or bool(problems),
                      dict(failure["details"], problems=problems))


def unwritable_checkpoints(workspace, base):
    """The checkpoint directory of a copy of `base` made read-only."""
    fault = "Checkpoint dir not writable"
    model_dir = workspace.root / "unwritable"
    shutil.copytree(base, model_dir)
    ckpt = model_dir / "checkpoints"
    if os.geteuid() != 0:
        how = "chmod 555"
        os.chmod(ckpt, 0o555)
        restore = lambda: os.chmod(ckpt, 0o755)  # noqa: E731
    elif shutil.which("chattr") and subprocess.run(
            ["chattr", "+i", str(ckpt)], capture_output=True).returncode == 0:
        how = "chattr +i (root ignores permissions)"
        restore = lambda: subprocess.run(  # noqa: E731
            ["chattr", "-i", str(ckpt)], check=True)
    else:
        return [report.skipped_row(
            fault, "running as root, which ignores permissions, and `chattr +i` "
                   f"does not work on {ckpt}")]
    try:
        failure = _write_failure(
            model_dir,
            lambda: runs.train_cli(model_dir, workspace.log(model_dir.name)),
            ("Could not write the checkpoint of step 30",
             "previous checkpoints are intact"), how)
    finally:
        restore()
    return [_finished_row(workspace, fault, model_dir, failure)]


def _copy_into(base, model_dir):
    for item in base.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, model_dir / item.name)


def disk_full(workspace, base):
    """A checkpoint write on a full disk: a small tmpfs holding a copy of
    `base` when this process may mount one, else ENOSPC from a patched
    checkpoint manager."""
    model_dir = workspace.root / "disk_full"
    model_dir.mkdir()
    used = sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
    size_kb = used // 1024 + 250  # Less than one more checkpoint.
    fragments = ("No space left on device", "previous checkpoints are intact")
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(model_dir)],
        capture_output=True,
    ).returncode == 0
    _copy_into(base, model_dir)
    if not mounted:
        failure = _write_failure(
            model_dir,
            lambda: runs.child(runs.spec(model_dir, fail_writes_from_step=30),
                               workspace.log(model_dir.name)),
            fragments, "ENOSPC raised by a patched CheckpointManager")
        return [_finished_row(workspace, "Disk full during a checkpoint write "
                              "(simulated ENOSPC)", model_dir, failure)]
    try:
        failure = _write_failure(
            model_dir,
            lambda: runs.train_cli(model_dir, workspace.log(model_dir.name)),
            fragments, f"tmpfs of {size_kb} KiB (real ENOSPC)")
        subprocess.run(["mount", "-o", "remount,size=64m", str(model_dir)], check=True)
        return [_finished_row(workspace, "Disk full during a checkpoint write "
                              "(real ENOSPC on a tmpfs)", model_dir, failure)]
    finally:
        subprocess.run(["umount", "-l", str(model_dir)], check=False)


def write_failures(workspace, base):
    """Checkpoint writes that fail: a read-only directory, a full disk."""
    return unwritable_checkpoints(workspace, base) + disk_full(workspace, base)


def nan_loss(workspace):
    """NaN training images from step 23: a clear stop, ckpt-20 kept."""
    model_dir = workspace.root / "nan"
    code, stderr = runs.child(runs.spec(model_dir, nan_from_step=23), workspace.log("nan"))
    named = runs.one_line_error(code, stderr, "step 23", "ckpt-20", "is kept")
    newest, checkpoints = runs.newest_valid_step(str(model_dir))
    intact = newest == 20 and not checkpoints["unreadable"]
    return [report.row("NaN loss", 1, named and intact, not intact,
                       dict(error=runs.error_lines(stderr), newest_checkpoint=newest))]

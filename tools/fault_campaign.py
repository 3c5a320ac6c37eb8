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
  slots, export) with no half-written checkpoint left;
- corrupted newest checkpoint (truncated / flipped bytes / truncated index /
  missing data), all checkpoints corrupted;
- a second trainer on a live `model_dir`, a stale lock after a SIGKILL;
- checkpoint directory not writable, disk full (a small tmpfs when this
  process may mount one, else a simulated ENOSPC);
- NaN loss;
- bad input: command-line errors, wrong image shape, corrupted TFRecord
  shard and missing split (real MNIST, when `--tfds_dir` has it), wrong
  dtype / rank / size at the SavedModel serving signature.

Prints a summary table (fault, injected, survived, data lost) and writes
`fault_campaign.json` and `fault_campaign.md` to `--output_dir`. About 15
minutes on 2 CPU cores (see the README's Reliability section); it
mounts a small tmpfs for the disk-full case when run as root, and otherwise
simulates ENOSPC in the checkpoint writer:

    python -m tools.fault_campaign --output_dir=/tmp/fault_campaign

Training is bit-deterministic (`train.deterministic`), so a resumed run must
equal the reference exactly.
"""

import concurrent.futures
import hashlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# A child is this module run again: `python -m tools.fault_campaign --child=...`.
_CHILD_COMMAND = [sys.executable, "-m", "tools.fault_campaign"]

from absl import app
from absl import flags

from tools import fault_injection as fi

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
    "tfds_dir", str(REPO_ROOT.parent / "shared" / "data" / "tensorflow_datasets"),
    "A TFDS data_dir with real MNIST for the corrupted-shard and missing-split "
    "checks (skipped when absent).",
)
_CHILD = flags.DEFINE_string("child", None, "Internal: JSON spec of a child run.")

PRESET = "mnist_small_lrlc"
TRAIN_STEPS = 40
EVAL_EVERY = 10
# Model overrides per campaign model: the preset's default network, and a tiny
# one for the scenarios that need many quick runs.
MODELS = {
    "default": {},
    "tiny": {"model.num_filters": [8, 8, 8], "model.global_avg_pooling": False},
}
OVERRIDES = {
    **MODELS["tiny"],
    "train.batch_size": 32,
    "train.eval_batch_size": 500,
    "train.train_steps": TRAIN_STEPS,
    "train.eval_every_steps": EVAL_EVERY,
    "train.log_every_steps": 10,
    "train.checkpoint_every_steps": 5,
    "train.keep_checkpoints": 3,
    "train.deterministic": True,
}
# Kill aim per phase: (largest occurrence, largest delay in seconds).
_KILL_AIM = {
    "step": (8, 0.05), "checkpoint": (4, 0.05),
    "evaluation": (3, 0.3), "export": (1, 2.0),
}
_CHILD_TIMEOUT = 300


# ----------------------------------------------------------------------------
# Child processes.


def _child_main(spec):
    """Child mode: one run with the faults of `spec`; errors are one line."""
    if spec.get("logical_cpus"):
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"]
        )
    from low_rank_local_connectivity import data
    from low_rank_local_connectivity import training

    try:
        fi.run_child(spec)
    except (TypeError, ValueError, data.DataNotFoundError,
            training.TrainerError) as error:
        sys.exit(f"error: {' '.join(str(error).split())}")


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return env


def _run(args, log_path):
    """Runs a command; returns (return code, stderr lines that are ours)."""
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(args)}\n")
        log.flush()
        process = subprocess.run(
            args, env=_env(), stdout=log, stderr=subprocess.PIPE, text=True,
            timeout=_CHILD_TIMEOUT,
        )
        log.write(process.stderr)
    return process.returncode, process.stderr


def _child(spec, log_path):
    return _run([*_CHILD_COMMAND, f"--child={json.dumps(spec)}"], log_path)


def _spec(model_dir, model="tiny", **extra):
    overrides = {k: v for k, v in OVERRIDES.items() if not k.startswith("model.")}
    return dict(preset=PRESET, overrides=dict(overrides, **MODELS[model]),
                model_dir=str(model_dir), record=str(model_dir) + ".events.jsonl",
                **extra)


def _cli_flags(overrides):
    flags_ = [f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
              f"experiment.py:{PRESET}"]
    for key, value in overrides.items():
        if isinstance(value, list):
            value = "(" + ",".join(map(str, value)) + ",)"
        flags_.append(f"--config.{key}={value}")
    return flags_


def _train_cli(model_dir, log_path, overrides=None, extra=()):
    args = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"),
            *_cli_flags(overrides or OVERRIDES), *extra]
    if model_dir is not None:
        args.append(f"--model_dir={model_dir}")
    return _run(args, log_path)


def _error_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith("error:")]


def _one_line_error(code, stderr, *fragments):
    """Exit code 1, one `error:` line ending stderr, no traceback, fragments."""
    errors = _error_lines(stderr)
    return (
        code == 1 and len(errors) == 1
        and stderr.rstrip().endswith(errors[0])
        and "Traceback" not in stderr
        and all(f in errors[0] for f in fragments)
    )


# ----------------------------------------------------------------------------
# Checks against the reference run.


def _tensors(prefix, skip=("save_counter", "train_seconds", "_CHECKPOINTABLE")):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if not any(s in key for s in skip)
    }


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _compare(model_dir, ref_dir, *, export=True):
    """Discrepancies of a finished run against the reference (a list)."""
    import numpy as np

    model_dir, ref_dir = pathlib.Path(model_dir), pathlib.Path(ref_dir)
    problems = []
    if not (model_dir / "results.json").exists():
        return ["no results.json"]
    results, ref = (_read_json(d / "results.json") for d in (model_dir, ref_dir))
    for key in ("train_steps", "best_valid", "test", "num_parameters"):
        if results[key] != ref[key]:
            problems.append(f"results.{key} {results[key]} != {ref[key]}")
    metrics = fi.metrics_report(model_dir, TRAIN_STEPS, EVAL_EVERY)
    for key in ("missing", "duplicates", "unexpected"):
        if metrics[key]:
            problems.append(f"metrics.jsonl {key}: {metrics[key]}")
    lines, ref_lines = (fi.read_records(d / "metrics.jsonl") for d in (model_dir, ref_dir))
    if lines != ref_lines:
        problems.append("metrics.jsonl values differ from the reference")
    if _read_json(model_dir / "best" / "best.json") != _read_json(ref_dir / "best" / "best.json"):
        problems.append("best/best.json differs")
    for subdir, name in (("checkpoints", "ckpt"), ("best", "best")):
        report = fi.checkpoint_report(str(model_dir / subdir))
        if report["partial"] or report["unreadable"]:
            problems.append(f"{subdir}: partial {report['partial']} "
                            f"unreadable {report['unreadable']}")
    for prefix in ("checkpoints/ckpt-%d" % TRAIN_STEPS,
                   "best/best-%d" % ref["best_valid"]["step"]):
        try:
            ours, theirs = _tensors(str(model_dir / prefix)), _tensors(str(ref_dir / prefix))
        except Exception as error:
            problems.append(f"{prefix}: {type(error).__name__}")
            continue
        if ours.keys() != theirs.keys() or any(
            not np.array_equal(ours[k], theirs[k]) for k in ours
        ):
            problems.append(f"{prefix} tensors differ from the reference")
    if (model_dir / "lock.json").exists():
        problems.append("lock.json left behind")
    if export:
        export_dir = model_dir / "export"
        staging = [n for n in os.listdir(export_dir) if n.startswith(".staging")] \
            if export_dir.exists() else []
        meta = export_dir / "serving_metadata.json"
        if not meta.exists() or _read_json(meta)["step"] != TRAIN_STEPS or staging:
            problems.append(f"export incomplete (staging {staging})")
        else:
            ours = _tensors(str(export_dir / "saved_model" / "variables" / "variables"))
            theirs = _tensors(str(ref_dir / "export" / "saved_model" / "variables" / "variables"))
            if ours.keys() != theirs.keys() or any(
                not np.array_equal(ours[k], theirs[k]) for k in ours
            ):
                problems.append("exported variables differ from the reference")
    return problems


def _snapshot(directory):
    """sha256 of every file of a directory (relative path -> digest)."""
    digests = {}
    for path in sorted(pathlib.Path(directory).rglob("*")):
        if path.is_file():
            digests[str(path.relative_to(directory))] = hashlib.sha256(
                path.read_bytes()).hexdigest()
    return digests


def _newest_valid_step(model_dir):
    report = fi.checkpoint_report(os.path.join(model_dir, "checkpoints"))
    return max(report["readable"], default=0), report


# ----------------------------------------------------------------------------
# Scenarios. Each returns a list of rows (dicts).


class Campaign:
    """Holds the output directory, the reference run and the kill records."""

    def __init__(self, output_dir, seed):
        self.root = pathlib.Path(output_dir)
        self.seed = seed
        self.refs = {model: self.root / f"reference_{model}" for model in MODELS}
        self.ref = self.refs["tiny"]
        self.kills = []
        self.runs = []
        self._lock = threading.Lock()

    def log(self, name):
        return str(self.root / f"{name}.log")

    def reference(self, model):
        ref = self.refs[model]
        code, stderr = _child(_spec(ref, model, export=True), self.log(ref.name))
        if code != 0:
            raise RuntimeError(f"the {model} reference run failed:\n{stderr[-3000:]}")

    def preemption_worker(self, worker, kills, model):
        """Runs model_dirs of `model` with kills until `kills` have fired.

        The target phase rotates over `fi.PHASES` (starting at `worker`) and
        moves on only when a kill fired, so that every phase gets its share.
        """
        rng = random.Random(self.seed * 1000 + worker)
        phase_index = worker
        fired = 0
        run_index = 0
        while fired < kills and run_index < 20:
            model_dir = self.root / f"preempt_{model}_w{worker}_r{run_index}"
            spec = _spec(model_dir, model, export=True)
            run_kills = []
            attempts = 0
            while True:
                attempts += 1
                phase = fi.PHASES[phase_index % len(fi.PHASES)]
                spec["kill"] = (fi.random_kill(rng, phase, *_KILL_AIM[phase])
                                if fired < kills else None)
                code, stderr = _child(spec, self.log(model_dir.name))
                events = fi.read_records(spec["record"])
                starts = [e for e in events if e["event"] == "start"]
                if run_kills:  # The kill before this attempt: did it resume right?
                    run_kills[-1]["restored_step"] = starts[-1]["restored_step"] \
                        if starts else None
                if code == -9:
                    kill = [e for e in events if e["event"] == "kill"][-1]
                    newest, report = _newest_valid_step(str(model_dir))
                    best_report = fi.checkpoint_report(str(model_dir / "best"))
                    export_dir = model_dir / "export"
                    run_kills.append(dict(
                        run=model_dir.name, model=model, target=kill["target"],
                        landed=kill["landed"], step=kill["step"],
                        newest_valid_step=newest,
                        partial_files=report["partial"] + best_report["partial"],
                        unreadable=dict(report["unreadable"], **best_report["unreadable"]),
                        export_marker=(export_dir / "serving_metadata.json").exists(),
                    ))
                    fired += 1
                    phase_index += 1
                    continue
                break
            problems = [] if code == 0 else [f"exit {code}: {stderr[-500:]}"]
            problems += _compare(model_dir, self.refs[model])
            for kill in run_kills:
                kill["run_ok"] = not problems
                kill["resumed_from_newest"] = kill["restored_step"] == kill["newest_valid_step"]
            with self._lock:
                self.kills += run_kills
                self.runs.append(dict(run=model_dir.name, attempts=attempts,
                                      kills=len(run_kills), problems=problems))
            run_index += 1

    def base_at_step(self, name, step):
        """A model_dir killed after `step` steps (checkpoints every 5)."""
        model_dir = self.root / name
        spec = _spec(model_dir, kill=dict(phase="step", occurrence=step + 1, delay=0))
        code, stderr = _child(spec, self.log(name))
        if code != -9:
            raise RuntimeError(f"{name}: expected a kill, got {code}: {stderr[-2000:]}")
        return model_dir

    def corrupted_checkpoints(self):
        base = self.base_at_step("corrupt_base", 26)  # ckpt-15, 20, 25.
        rows = []
        for mode in fi.CORRUPTIONS:
            model_dir = self.root / f"corrupt_{mode}"
            shutil.copytree(base, model_dir)
            fi.corrupt_checkpoint(str(model_dir / "checkpoints" / "ckpt-25"), mode)
            spec = _spec(model_dir, export=True)
            code, stderr = _child(spec, self.log(model_dir.name))
            start = [e for e in fi.read_records(spec["record"]) if e["event"] == "start"]
            said = "is unreadable" in stderr and "falling back" in stderr
            restored = start[-1]["restored_step"] if start else None
            quarantined = sorted(os.listdir(model_dir / "checkpoints" / "corrupted")) \
                if (model_dir / "checkpoints" / "corrupted").exists() else []
            problems = _compare(model_dir, self.ref) if code == 0 else [stderr[-300:]]
            ok = code == 0 and said and restored == 20 and quarantined and not problems
            rows.append(dict(
                fault=f"Corrupted newest checkpoint ({mode})", injected=1,
                survived=int(ok), data_lost=int(bool(problems)),
                details=dict(restored_step=restored, said_so=said,
                             quarantined=quarantined, problems=problems),
            ))
        model_dir = self.root / "corrupt_all"
        shutil.copytree(base, model_dir)
        for step in (15, 20, 25):
            fi.corrupt_checkpoint(str(model_dir / "checkpoints" / f"ckpt-{step}"),
                                  "flip_data", seed=step)
        before = _snapshot(model_dir / "checkpoints")
        code, stderr = _train_cli(model_dir, self.log(model_dir.name))
        untouched = _snapshot(model_dir / "checkpoints") == before
        ok = _one_line_error(code, stderr, "No checkpoint in", "is readable") and untouched
        rows.append(dict(
            fault="All checkpoints corrupted", injected=1, survived=int(ok),
            data_lost=int(not untouched),
            details=dict(code=code, error=_error_lines(stderr), untouched=untouched),
        ))
        return rows, base

    def concurrent_trainers(self):
        rows = []
        model_dir = self.root / "concurrent"
        spec = _spec(model_dir, step_sleep=0.15)
        log = self.log(model_dir.name)
        first = subprocess.Popen(
            [*_CHILD_COMMAND, f"--child={json.dumps(spec)}"],
            env=_env(), stdout=open(log, "a"), stderr=subprocess.STDOUT,
        )
        deadline = time.time() + _CHILD_TIMEOUT
        while not [e for e in fi.read_records(spec["record"]) if e["event"] == "start"] \
                or not (model_dir / "lock.json").exists():
            if first.poll() is not None or time.time() > deadline:
                break
            time.sleep(0.2)
        code, stderr = _train_cli(model_dir, self.log("concurrent_second"))
        refused = _one_line_error(code, stderr, "in use by another trainer")
        first_code = first.wait(timeout=_CHILD_TIMEOUT)
        problems = _compare(model_dir, self.ref, export=False) if first_code == 0 \
            else [f"first trainer exited {first_code}"]
        rows.append(dict(
            fault="Second trainer on a live model_dir", injected=1,
            survived=int(refused and not problems), data_lost=int(bool(problems)),
            details=dict(second_exit=code, error=_error_lines(stderr),
                         problems=problems),
        ))
        model_dir = self.root / "stale_lock"
        spec = _spec(model_dir, kill=dict(phase="step", occurrence=12, delay=0))
        _child(spec, self.log(model_dir.name))
        left = (model_dir / "lock.json").exists()
        spec.pop("kill")
        code, stderr = _child(spec, self.log(model_dir.name))
        took_over = "Taking over the stale lock" in stderr
        problems = _compare(model_dir, self.ref, export=False) if code == 0 \
            else [stderr[-300:]]
        rows.append(dict(
            fault="Stale lock after SIGKILL", injected=int(left),
            survived=int(left and took_over and not problems),
            data_lost=int(bool(problems)),
            details=dict(lock_left=left, took_over=took_over, problems=problems),
        ))
        return rows

    def _write_failure(self, fault, model_dir, break_fn, repair_fn, fragments):
        before = _snapshot(model_dir / "checkpoints")
        broken = break_fn()
        code, stderr = _train_cli(model_dir, self.log(model_dir.name))
        after = _snapshot(model_dir / "checkpoints")
        intact = all(after.get(k) == v for k, v in before.items()
                     if k.startswith("ckpt-") or k == "checkpoint")
        partial = fi.partial_checkpoint_files(str(model_dir / "checkpoints"))
        clear = _one_line_error(code, stderr, *fragments)
        repair_fn()
        code2, stderr2 = _child(_spec(model_dir, export=True), self.log(model_dir.name))
        problems = _compare(model_dir, self.ref) if code2 == 0 else [stderr2[-300:]]
        return dict(
            fault=fault, injected=1,
            survived=int(clear and intact and not partial and not problems),
            data_lost=int(not intact or bool(problems)),
            details=dict(simulation=broken, exit=code, error=_error_lines(stderr),
                         previous_intact=intact, partial_left=partial,
                         problems=problems),
        )

    def write_failures(self, base):
        rows = []
        model_dir = self.root / "unwritable"
        shutil.copytree(base, model_dir)
        ckpt = model_dir / "checkpoints"
        use_chattr = os.geteuid() == 0 and shutil.which("chattr")

        def make_unwritable():
            if use_chattr:
                subprocess.run(["chattr", "+i", str(ckpt)], check=True)
                return "chattr +i (root ignores permissions)"
            os.chmod(ckpt, 0o555)
            return "chmod 555"

        def make_writable():
            if use_chattr:
                subprocess.run(["chattr", "-i", str(ckpt)], check=True)
            os.chmod(ckpt, 0o755)

        rows.append(self._write_failure(
            "Checkpoint dir not writable", model_dir, make_unwritable,
            make_writable, ("Could not write the checkpoint of step 30",
                            "previous checkpoints are intact"),
        ))
        model_dir = self.root / "disk_full"
        mounted = []
        model_dir.mkdir()

        def fill_disk():
            used = sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
            size_kb = used // 1024 + 250  # Less than one more checkpoint.
            if os.geteuid() == 0 and subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                 str(model_dir)], capture_output=True,
            ).returncode == 0:
                mounted.append(size_kb)
                for item in base.iterdir():
                    (shutil.copytree if item.is_dir() else shutil.copy2)(
                        item, model_dir / item.name)
                return f"tmpfs of {size_kb} KiB (real ENOSPC)"
            for item in base.iterdir():
                (shutil.copytree if item.is_dir() else shutil.copy2)(
                    item, model_dir / item.name)
            raise NotImplementedError

        def free_space():
            if mounted:
                subprocess.run(["mount", "-o", "remount,size=64m", str(model_dir)],
                               check=True)

        try:
            try:
                rows.append(self._write_failure(
                    "Disk full during a checkpoint write", model_dir, fill_disk,
                    free_space, ("No space left on device",
                                 "previous checkpoints are intact"),
                ))
            except NotImplementedError:
                rows.append(self._simulated_disk_full(model_dir))
        finally:
            if mounted:
                subprocess.run(["umount", "-l", str(model_dir)], check=False)
        return rows

    def _simulated_disk_full(self, model_dir):
        """ENOSPC from the checkpoint writer (when tmpfs cannot be mounted)."""
        before = _snapshot(model_dir / "checkpoints")
        spec = _spec(model_dir, fail_writes_from_step=30)
        code, stderr = _child(spec, self.log(model_dir.name))
        after = _snapshot(model_dir / "checkpoints")
        intact = all(after.get(k) == v for k, v in before.items())
        partial = fi.partial_checkpoint_files(str(model_dir / "checkpoints"))
        clear = _one_line_error(code, stderr, "No space left on device",
                                "previous checkpoints are intact")
        code2, stderr2 = _child(_spec(model_dir, export=True), self.log(model_dir.name))
        problems = _compare(model_dir, self.ref) if code2 == 0 else [stderr2[-300:]]
        return dict(
            fault="Disk full during a checkpoint write", injected=1,
            survived=int(clear and intact and not partial and not problems),
            data_lost=int(not intact or bool(problems)),
            details=dict(simulation="ENOSPC raised by a patched CheckpointManager",
                         error=_error_lines(stderr), previous_intact=intact,
                         partial_left=partial, problems=problems),
        )

    def nan_loss(self):
        model_dir = self.root / "nan"
        code, stderr = _child(_spec(model_dir, nan_from_step=23), self.log("nan"))
        named = _one_line_error(code, stderr, "step 23", "ckpt-20", "is kept")
        newest, report = _newest_valid_step(str(model_dir))
        intact = newest == 20 and not report["unreadable"]
        return [dict(
            fault="NaN loss", injected=1, survived=int(named and intact),
            data_lost=int(not intact),
            details=dict(error=_error_lines(stderr), newest_checkpoint=newest),
        )]

    def bad_cli(self):
        """Command-line and config errors: one line, exit code 1."""
        bad = self.root / "bad_cli"
        cases = [
            ("unknown preset", dict(config_preset="no_such_preset"), "no_such_preset"),
            ("unknown override key", {"train.nope": 1}, "unknown config field"),
            ("wrong type", {"train.train_steps": "abc"}, "train_steps"),
            ("negative steps", {"train.train_steps": -5}, "config.train.train_steps"),
            ("negative batch size", {"train.batch_size": -32}, "config.train.batch_size"),
            ("missing --model_dir", None, "model_dir"),
        ]
        rows = []
        for name, overrides, fragment in cases:
            extra = {}
            if overrides and "config_preset" in overrides:
                args = [f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
                        f"experiment.py:{overrides['config_preset']}"]
                code, stderr = _run([sys.executable, str(REPO_ROOT / "scripts" / "train.py"),
                                     *args, f"--model_dir={bad}"], self.log("bad_cli"))
            elif overrides is None:
                code, stderr = _train_cli(None, self.log("bad_cli"))
            else:
                extra = dict(OVERRIDES, **overrides)
                code, stderr = _train_cli(bad, self.log("bad_cli"), extra)
            ok = (_one_line_error(code, stderr, fragment)
                  or (overrides is None and code != 0 and fragment in stderr
                      and "Traceback" not in stderr))
            rows.append(dict(fault=f"CLI: {name}", injected=1, survived=int(ok),
                             data_lost=0, details=dict(exit=code,
                                                       error=_error_lines(stderr)
                                                       or stderr.strip()[-300:])))
        # Not reachable from train.py flags on one CPU device / with a None
        # field: the library API, through a child with the same error handling.
        for name, overrides, fragment, extra in (
            ("batch size not divisible by replicas",
             {"train.distribution_strategy": "mirrored", "train.batch_size": 33},
             "multiple of the number of replicas", dict(logical_cpus=2)),
            ("wrong image shape for the model", {"model.input_shape": [32, 32, 1]},
             "config.model.input_shape", {}),
        ):
            spec = _spec(self.root / "bad_config", **extra)
            spec["overrides"].update(overrides)
            code, stderr = _child(spec, self.log("bad_cli"))
            rows.append(dict(
                fault=f"Config: {name}", injected=1,
                survived=int(_one_line_error(code, stderr, fragment)),
                data_lost=0, details=dict(error=_error_lines(stderr)),
            ))
        return rows

    def bad_data(self):
        """Corrupted shard and missing split of a copy of real MNIST."""
        source = pathlib.Path(_TFDS_DIR.value) / "mnist"
        if not source.is_dir():
            return [dict(fault="Data: corrupted shard / missing split", injected=0,
                         survived=0, data_lost=0,
                         details=f"skipped: no MNIST in {_TFDS_DIR.value}")]
        rows = []
        overrides = dict(OVERRIDES, **{"train.train_steps": 4,
                                       "train.eval_every_steps": 2,
                                       "train.checkpoint_every_steps": 2,
                                       "train.eval_batch_size": 1000})
        for name, fragment in (("corrupted shard", "corrupted record"),
                               ("missing split", "is missing files")):
            data_dir = self.root / f"tfds_{name.replace(' ', '_')}"
            shutil.copytree(source, data_dir / "mnist")
            version = next((data_dir / "mnist").iterdir())
            for path in version.iterdir():
                path.chmod(0o644)
            if name == "corrupted shard":
                shard = next(version.glob("mnist-train.tfrecord-*"))
                content = bytearray(shard.read_bytes())
                for i in range(len(content) // 40, len(content) // 40 + 64):
                    content[i] ^= 0xFF  # In the first 8%: the 'valid' split.
                shard.write_bytes(bytes(content))
                target = str(shard)
            else:
                target = str(next(version.glob("mnist-test.tfrecord-*")))
                os.remove(target)
            args = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"),
                    f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
                    "experiment.py:mnist_lrlc",
                    *_cli_flags(overrides)[1:],
                    f"--config.dataset.data_dir={data_dir}",
                    f"--model_dir={self.root / ('data_' + name.replace(' ', '_'))}"]
            code, stderr = _run(args, self.log("bad_data"))
            ok = _one_line_error(code, stderr, fragment, target)
            rows.append(dict(fault=f"Data: {name}", injected=1, survived=int(ok),
                             data_lost=0, details=dict(error=_error_lines(stderr))))
        return rows

    def bad_serving_inputs(self):
        """Wrong dtype / rank / size at the exported serving signature."""
        import numpy as np
        import tensorflow as tf

        from low_rank_local_connectivity import export

        export_dir = str(self.ref / "export")
        raw = tf.saved_model.load(
            os.path.join(export_dir, "saved_model")).signatures["serving_default"]
        checked = export.load_serving_function(export_dir)
        good = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), np.uint8)
        ref = raw(images=tf.constant(good))["probabilities"].numpy()
        cases = [
            ("float32 tensor", tf.constant(good, tf.float32), raw),
            ("int32 tensor", tf.constant(good, tf.int32), raw),
            ("float32 NumPy array (checked loader)", good.astype(np.float32), checked),
            ("int64 NumPy array (checked loader)", good.astype(np.int64), checked),
            ("rank 3", tf.constant(good[0]), raw),
            ("rank 5", tf.constant(good[..., None]), raw),
            ("32x32 images", tf.zeros((4, 32, 32, 1), tf.uint8), raw),
            ("3 channels", tf.zeros((4, 28, 28, 3), tf.uint8), raw),
            ("27x28 images", tf.zeros((4, 27, 28, 1), tf.uint8), raw),
        ]
        rows = []
        for name, images, function in cases:
            try:
                function(images=images) if function is raw else function(images)
                refused, message = False, "answered"
            except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
                refused, message = True, str(error).splitlines()[0][:160]
            rows.append(dict(fault=f"Serving: {name}", injected=1,
                             survived=int(refused), data_lost=0,
                             details=dict(message=message)))
        same = np.array_equal(checked(good)["probabilities"].numpy(), ref)
        rows.append(dict(fault="Serving: valid uint8 batch answers as before",
                         injected=1, survived=int(same), data_lost=0, details={}))
        return rows


def _kill_rows(kills, model):
    rows = []
    label = {"default": "default 64-filter model", "tiny": "tiny model"}[model]
    for phase in (*fi.PHASES, "other"):
        landed = [k for k in kills if k["landed"] == phase and k["model"] == model]
        if not landed:
            continue
        survived = [k for k in landed if k["run_ok"] and k["resumed_from_newest"]
                    and not k["unreadable"]]
        rows.append(dict(
            fault=(f"SIGKILL mid-{phase}" if phase != "other"
                   else "SIGKILL between phases") + f" ({label})",
            injected=len(landed), survived=len(survived),
            data_lost=sum(1 for k in landed if not k["run_ok"] or k["unreadable"]),
            details=dict(
                aimed_at={p: sum(1 for k in landed if k["target"] == p) for p in fi.PHASES},
                partial_files_left_then_removed=sum(len(k["partial_files"]) for k in landed),
                steps_redone=sum(max(0, (k["step"] or 0) - k["newest_valid_step"])
                                 for k in landed),
            ),
        ))
    return rows


def _markdown(rows, summary):
    lines = [
        "| Fault | Injected | Survived | Data lost |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['fault']} | {r['injected']} | {r['survived']} | {r['data_lost']} |"
              for r in rows]
    lines += ["", *[f"- {k}: {v}" for k, v in summary.items()]]
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _CHILD.value:
        _child_main(json.loads(_CHILD.value))
        return
    start = time.time()
    root = pathlib.Path(_OUTPUT_DIR.value)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    campaign = Campaign(root, _SEED.value)
    print(f"Reference runs in {campaign.root}/reference_* ...", flush=True)
    for model in MODELS:
        campaign.reference(model)
    workers = max(1, _WORKERS.value)
    rows = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(campaign.preemption_worker, w, (kills + w) // workers, model)
            for model, kills in (("default", _DEFAULT_MODEL_KILLS.value),
                                 ("tiny", _KILLS.value))
            for w in range(workers)
        ]
        corrupted = pool.submit(campaign.corrupted_checkpoints)
        concurrent_ = pool.submit(campaign.concurrent_trainers)
        nan = pool.submit(campaign.nan_loss)
        cli = pool.submit(campaign.bad_cli)
        data = pool.submit(campaign.bad_data)
        rows["corrupted"], base = corrupted.result()
        writes = pool.submit(campaign.write_failures, base)
        for future in futures:
            future.result()
        rows["concurrent"] = concurrent_.result()
        rows["writes"] = writes.result()
        rows["nan"] = nan.result()
        rows["cli"] = cli.result()
        rows["data"] = data.result()
    rows["serving"] = campaign.bad_serving_inputs()
    table = (_kill_rows(campaign.kills, "default") + _kill_rows(campaign.kills, "tiny")
             + rows["corrupted"] + rows["concurrent"]
             + rows["writes"] + rows["nan"] + rows["cli"] + rows["data"]
             + rows["serving"])
    trainer_faults = [r for r in table if not r["fault"].split(":")[0] in
                      ("CLI", "Config", "Data", "Serving")]
    bad_inputs = [r for r in table if r not in trainer_faults]
    summary = dict(
        kills_fired=len(campaign.kills),
        kills_fired_at_default_model=sum(
            1 for k in campaign.kills if k["model"] == "default"),
        preemption_runs=len(campaign.runs),
        runs_matching_reference=sum(1 for r in campaign.runs if not r["problems"]),
        trainer_faults_injected=sum(r["injected"] for r in trainer_faults),
        trainer_faults_survived=sum(r["survived"] for r in trainer_faults),
        bad_input_cases=sum(r["injected"] for r in bad_inputs),
        bad_input_cases_refused_clearly=sum(r["survived"] for r in bad_inputs),
        data_lost=sum(r["data_lost"] for r in table),
        wall_seconds=round(time.time() - start, 1),
        command=f"python -m tools.fault_campaign --kills={_KILLS.value} "
                f"--default_model_kills={_DEFAULT_MODEL_KILLS.value} "
                f"--seed={_SEED.value}",
    )
    report = dict(summary=summary, rows=table, kills=campaign.kills, runs=campaign.runs)
    (root / "fault_campaign.json").write_text(json.dumps(report, indent=2, default=str))
    markdown = _markdown(table, summary)
    (root / "fault_campaign.md").write_text(markdown)
    print(markdown)
    failed = [r["fault"] for r in table if r["survived"] < r["injected"] or r["data_lost"]]
    if failed:
        sys.exit(f"error: not survived: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)

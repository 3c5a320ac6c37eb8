"""Reliability: crashes, corrupted checkpoints, locks, write failures, bad input.

The full campaign (>= 20 SIGKILLs and every scenario, with a summary table)
is `python -m tools.fault_campaign`; these tests check each mechanism once, fast.
"""

import io
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from low_rank_local_connectivity import data
from low_rank_local_connectivity import export
from low_rank_local_connectivity import fileio
from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.training import run_dir
from tools import campaign_bad_inputs
from tools import campaign_progress
from tools import campaign_report
from tools import campaign_runs
from tools import child_run
from tools import fault_injection as fi
from tests.trainer_runs import tiny_overrides
from tests.trainer_runs import train_quietly

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

_OVERRIDES = tiny_overrides(**{
    "train.eval_batch_size": 500, "train.checkpoint_every_steps": 2,
})


def _config(**extra):
    config = experiment.get_config("mnist_small_lrlc")
    config.update_from_flattened_dict(dict(_OVERRIDES, **extra))
    return config


def _train(config, model_dir, **kwargs):
    """train_and_evaluate -> (results, the step it resumed from)."""
    start, results = train_quietly(config, model_dir, **kwargs)
    return results, start.step


def _tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if "save_counter" not in key and "train_seconds" not in key
        and "_CHECKPOINTABLE" not in key
    }


def _snapshot(directory):
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(pathlib.Path(directory).rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 6-step run (evaluations at 3, 6; checkpoints 3, 4, 6 kept)."""
    model_dir = tmp_path_factory.mktemp("finished") / "run"
    results, _ = _train(_config(), model_dir)
    return model_dir, results


def _copy(finished_run, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], model_dir)
    return model_dir


# ----------------------------------------------------------------------------
# model_dir lock.


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(model_dir, **owner):
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, run_dir.LOCK_FILE), "w") as f:
        json.dump(dict(dict(pid=1, hostname="h", started=0.0, heartbeat=time.time(),
                            token="t"), **owner), f)


def test_lock_refuses_a_live_owner_and_releases(tmp_path):
    with training.ModelDirLock(str(tmp_path)) as lock:
        owner = json.loads((tmp_path / run_dir.LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid()
        assert owner["hostname"] == socket.gethostname()
        with pytest.raises(training.ModelDirLockedError,
                           match=rf"in use by another trainer \(pid {os.getpid()}"):
            training.ModelDirLock(str(tmp_path)).acquire()
        assert lock.path == str(tmp_path / run_dir.LOCK_FILE)
    assert not (tmp_path / run_dir.LOCK_FILE).exists()


@pytest.mark.parametrize("owner, taken", [
    (dict(hostname=socket.gethostname(), pid="dead"), True),  # Crashed here.
    (dict(hostname="other-host", heartbeat=0.0), True),  # Old heartbeat.
    (dict(hostname="other-host"), False),  # Fresh heartbeat elsewhere.
])
def test_lock_takes_over_only_stale_locks(tmp_path, owner, taken):
    if owner.get("pid") == "dead":
        owner["pid"] = _dead_pid()
    _write_lock(str(tmp_path), **owner)
    lock = training.ModelDirLock(str(tmp_path))
    if taken:
        with lock:
            held = json.loads((tmp_path / run_dir.LOCK_FILE).read_text())
            assert held["pid"] == os.getpid()
    else:
        with pytest.raises(training.ModelDirLockedError, match="other-host"):
            lock.acquire()
        assert json.loads((tmp_path / run_dir.LOCK_FILE).read_text())["hostname"] == "other-host"
    assert sorted(os.listdir(tmp_path)) == ([] if taken else [run_dir.LOCK_FILE])


def test_lock_rejects_inconsistent_intervals(tmp_path):
    with pytest.raises(ValueError, match="heartbeat_seconds.*stale_seconds"):
        training.ModelDirLock(str(tmp_path), heartbeat_seconds=10, stale_seconds=5)


@pytest.mark.slow
def test_second_trainer_is_refused_on_the_command_line(finished_run, tmp_path):
    model_dir = _copy(finished_run, tmp_path)
    flags_ = [f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
              "experiment.py:mnist_small_lrlc"] + [
        f"--config.{k}=({','.join(map(str, v))},)" if isinstance(v, tuple)
        else f"--config.{k}={v}" for k, v in _OVERRIDES.items()
    ]
    with training.ModelDirLock(str(model_dir)):
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), *flags_,
             f"--model_dir={model_dir}"],
            capture_output=True, text=True, timeout=240,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(errors) == 1 and "in use by another trainer" in errors[0]
    assert result.stderr.rstrip().endswith(errors[0]) and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------
# Corrupted checkpoints.


@pytest.mark.parametrize("mode", fi.CORRUPTIONS)
def test_corrupted_newest_checkpoint_falls_back_and_finishes(
    finished_run, tmp_path, mode, caplog
):
    model_dir = _copy(finished_run, tmp_path)
    ckpt = model_dir / "checkpoints"
    original = _tensors(str(ckpt / "ckpt-6"))
    fi.corrupt_checkpoint(str(ckpt / "ckpt-6"), mode)
    with caplog.at_level("WARNING"):
        results, start = _train(_config(), model_dir)
    assert start == 4  # The previous one, not 0.
    assert "ckpt-6 is unreadable" in caplog.text
    assert "Resuming from" in caplog.text and "ckpt-4 (step 4)" in caplog.text
    assert results["train_steps"] == 6 and results["session_steps"] == 2
    assert sorted(os.listdir(ckpt / run_dir.CORRUPTED_DIR)) == sorted(
        n for n in os.listdir(finished_run[0] / "checkpoints") if n.startswith("ckpt-6")
    ) or mode == "delete_data"
    assert tf.train.latest_checkpoint(str(ckpt)).endswith("ckpt-6")
    redone = _tensors(str(ckpt / "ckpt-6"))
    assert redone.keys() == original.keys()
    for key in original:
        np.testing.assert_allclose(redone[key], original[key], rtol=1e-4, atol=1e-6)
    report = fi.metrics_report(str(model_dir), 6, 3)
    assert not report["missing"] and not report["duplicates"] and not report["unexpected"]


def test_all_checkpoints_corrupted_is_an_error_not_a_restart(finished_run, tmp_path):
    model_dir = _copy(finished_run, tmp_path)
    for step in (3, 4, 6):
        fi.corrupt_checkpoint(str(model_dir / "checkpoints" / f"ckpt-{step}"),
                              "truncate_data")
    before = _snapshot(model_dir)
    with pytest.raises(training.CheckpointCorruptedError,
                       match=r"No checkpoint in .*checkpoints is readable.*ckpt-6.*"
                             r"does not restart from step 0"):
        _train(_config(), model_dir)
    assert _snapshot(model_dir) == before


def test_partial_files_of_an_interrupted_write_are_removed(finished_run, tmp_path):
    model_dir = _copy(finished_run, tmp_path)
    ckpt = model_dir / "checkpoints"
    (ckpt / "ckpt-8_temp").mkdir()
    (ckpt / "ckpt-8_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    (ckpt / "ckpt-9.data-00000-of-00001").write_bytes(b"y")
    assert fi.partial_checkpoint_files(str(ckpt)) == [
        "ckpt-8_temp", "ckpt-9.data-00000-of-00001"]
    assert _train(_config(), model_dir)[1] == 6
    assert fi.partial_checkpoint_files(str(ckpt)) == []
    report = fi.checkpoint_report(str(ckpt))
    assert report["readable"] == [3, 4, 6] and not report["unreadable"]


# ----------------------------------------------------------------------------
# Write failures and non-finite values.


def _make_unwritable(directory):
    if os.geteuid() != 0:
        os.chmod(directory, 0o555)
        return lambda: os.chmod(directory, 0o755)
    if shutil.which("chattr") and subprocess.run(
        ["chattr", "+i", str(directory)], capture_output=True
    ).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(directory)], check=True)
    pytest.skip("cannot make a directory unwritable as root without chattr")


@pytest.mark.parametrize("failure", ["unwritable", "disk_full"])
def test_write_failure_is_clear_and_keeps_previous_checkpoints(tmp_path, failure):
    model_dir = tmp_path / "run"
    _train(_config(**{"train.train_steps": 4}), model_dir)
    ckpt = model_dir / "checkpoints"
    before = _snapshot(ckpt)
    config = _config()  # Continue to 6 steps: the next checkpoint is ckpt-6.
    factory = None
    if failure == "unwritable":
        restore = _make_unwritable(ckpt)
        message = r"checkpoint of step 6 .*checkpoints/ckpt-4"
    else:
        factory = fi.disk_full_checkpoints(6)
        restore = lambda: None  # noqa: E731
        message = r"No space left on device.*intact: .*ckpt-4"
    try:
        with pytest.raises(training.ModelDirWriteError, match=message):
            _train(config, model_dir, checkpoint_manager_factory=factory)
    finally:
        restore()
    assert _snapshot(ckpt) == before
    assert not (model_dir / run_dir.LOCK_FILE).exists()
    results, _ = _train(config, model_dir)
    assert results["train_steps"] == 6
    assert fi.checkpoint_report(str(ckpt))["readable"] == [3, 4, 6]


def test_run_file_write_failure_is_clear(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "rename", full)
    with pytest.raises(training.ModelDirWriteError,
                       match=r"Could not write .*config.json.*No space left"):
        _train(_config(), tmp_path)
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []


def test_non_finite_weights_stop_before_the_checkpoint(tmp_path):
    def poison(controller):
        kernel = controller.task.model.trainable_variables[0]
        kernel.assign(tf.fill(kernel.shape, np.inf))

    with pytest.raises(training.NonFiniteLossError,
                       match=r"step 4: the weights .* NaN or infinite.*ckpt-3, is "
                             r"kept \(step 3\)"):
        _train(_config(), tmp_path, callbacks=[fi.AfterStep(4, poison)])
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-3")


# ----------------------------------------------------------------------------
# Resume bookkeeping and SIGKILL.


def test_rerun_and_lost_best_record_keep_metrics_exact(finished_run, tmp_path):
    model_dir = _copy(finished_run, tmp_path)
    best = json.loads((model_dir / "best" / "best.json").read_text())
    (model_dir / "best" / "best.json").unlink()  # As if killed before writing it.
    results, _ = _train(_config(), model_dir)
    assert results["best_valid"] == best == finished_run[1]["best_valid"]
    report = fi.metrics_report(str(model_dir), 6, 3)
    assert report["found"] == [("valid", 3), ("valid", 6), ("test", 6)]
    if best["step"] == 6:
        assert json.loads((model_dir / "best" / "best.json").read_text()) == best


def _child(spec):
    return subprocess.run(
        child_run.command(spec), capture_output=True, text=True, timeout=300,
        env=child_run.environment(), cwd=str(REPO_ROOT),
    )


@pytest.mark.slow
def test_sigkills_in_each_phase_lose_nothing(tmp_path):
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in _OVERRIDES.items()}
    overrides.update({"train.train_steps": 12, "train.deterministic": True})

    def spec(name, **extra):
        return dict(overrides=overrides, model_dir=str(tmp_path / name),
                    record=str(tmp_path / f"{name}.jsonl"), **extra)

    reference = spec("reference", export=True)
    assert _child(reference).returncode == 0
    killed = spec("killed", export=True)
    kills = [dict(phase="step", occurrence=3, delay=0.0),
             dict(phase="checkpoint", occurrence=2, delay=0.0),
             dict(phase="evaluation", occurrence=1, delay=0.05),
             dict(phase="export", occurrence=1, delay=0.3)]
    newest = []
    for kill in kills:
        result = _child(dict(killed, kill=kill))
        assert result.returncode == -9, result.stderr[-2000:]
        newest.append(max(fi.checkpoint_report(
            str(tmp_path / "killed" / "checkpoints"))["readable"], default=0))
    result = _child(killed)
    assert result.returncode == 0, result.stderr[-2000:]
    events = fi.read_records(killed["record"])
    landed = [e["landed"] for e in events if e["event"] == "kill"]
    assert landed == ["step", "checkpoint", "evaluation", "export"]
    restored = [e["restored_step"] for e in events if e["event"] == "start"]
    assert restored == [0] + newest  # Always the newest valid checkpoint.
    for name in ("metrics.jsonl", "results.json"):
        ours, theirs = (
            fi.read_records(str(tmp_path / d / name)) if name.endswith("l")
            else json.loads((tmp_path / d / name).read_text())
            for d in ("killed", "reference")
        )
        if name == "results.json":
            keys = ("train_steps", "best_valid", "test", "num_parameters")
            ours, theirs = ([r[k] for k in keys] for r in (ours, theirs))
        assert ours == theirs
    a, b = (_tensors(str(tmp_path / d / "checkpoints" / "ckpt-12"))
            for d in ("killed", "reference"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    for sub in ("checkpoints", "best"):
        report = fi.checkpoint_report(str(tmp_path / "killed" / sub))
        assert not report["partial"] and not report["unreadable"]
    export_dir = tmp_path / "killed" / "export"
    assert json.loads((export_dir / "serving_metadata.json").read_text())["step"] == 12
    assert not [n for n in os.listdir(export_dir) if n.startswith(".staging")]
    assert not (tmp_path / "killed" / run_dir.LOCK_FILE).exists()


# ----------------------------------------------------------------------------
# Bad input: config, data, serving signature.


@pytest.mark.parametrize("field, value, message", [
    ("model.input_shape", (32, 32, 1), r"config\.model\.input_shape.*\(28, 28, 1\).*"
                                       r"Received: \(32, 32, 1\)"),
    ("model.num_classes", 7, r"config\.model\.num_classes.*10.*Received: 7"),
])
def test_model_shape_must_match_the_dataset(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        _train(_config(**{field: value}), tmp_path)
    assert not os.listdir(tmp_path)


@pytest.fixture
def mnist_copy(shared_tfds_dir, tmp_path):
    shutil.copytree(os.path.join(shared_tfds_dir, "mnist"), tmp_path / "tfds" / "mnist")
    version = next((tmp_path / "tfds" / "mnist").iterdir())
    for path in version.iterdir():
        path.chmod(0o644)
    return tmp_path / "tfds", version


def test_missing_split_names_split_and_file(mnist_copy, tmp_path):
    data_dir, version = mnist_copy
    missing = next(version.glob("mnist-test.tfrecord-*"))
    missing.unlink()
    assert data.resolve("mnist", data_dir=str(data_dir)).find_unreadable_files(
        "test", read_records=False
    ) == [(str(missing), "missing file")]
    config = experiment.get_config("mnist_lrlc")
    config.update_from_flattened_dict(dict(_OVERRIDES, **{"dataset.data_dir": str(data_dir)}))
    with pytest.raises(data.DataNotFoundError,
                       match=rf"Split 'test' of dataset 'mnist' is missing files: {missing}"):
        _train(config, tmp_path / "run")  # Fails before training.
    assert not (tmp_path / "run").exists()


def test_corrupted_shard_is_named(mnist_copy, tmp_path):
    data_dir, version = mnist_copy
    shard = next(version.glob("mnist-train.tfrecord-*"))
    content = bytearray(shard.read_bytes())
    start = len(content) // 40  # Read by the 'valid' split (and 'train').
    content[start:start + 64] = bytes(b ^ 0xFF for b in content[start:start + 64])
    shard.write_bytes(bytes(content))
    unreadable = data.resolve("mnist", data_dir=str(data_dir)).find_unreadable_files(
        "valid")
    assert [path for path, _ in unreadable] == [str(shard)]
    assert "corrupted record" in unreadable[0][1]
    config = experiment.get_config("mnist_lrlc")
    config.update_from_flattened_dict(dict(_OVERRIDES, **{
        "train.train_steps": 2, "train.eval_every_steps": 2,
        "dataset.data_dir": str(data_dir), "train.eval_batch_size": 1000}))
    with pytest.raises(training.InputDataError,
                       match=rf"split of dataset 'mnist' at step \d \(DataLossError: "
                             rf"corrupted record at \d+\).*{shard}: corrupted record"):
        _train(config, tmp_path / "run")


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory):
    export_dir = tmp_path_factory.mktemp("export")
    export.export_model(str(finished_run[0]), str(export_dir))
    return export_dir


@pytest.mark.parametrize("images", [
    tf.zeros((2, 28, 28, 1), tf.float32),
    tf.zeros((2, 28, 28, 1), tf.int32),
    tf.zeros((28, 28, 1), tf.uint8),
    tf.zeros((2, 28, 28, 1, 1), tf.uint8),
    tf.zeros((2, 32, 32, 1), tf.uint8),
    tf.zeros((2, 28, 27, 1), tf.uint8),
    tf.zeros((2, 28, 28, 3), tf.uint8),
], ids=["float32", "int32", "rank3", "rank5", "32x32", "28x27", "rgb"])
def test_serving_signature_refuses_wrong_inputs(exported, images):
    serve = tf.saved_model.load(str(exported / "saved_model")).signatures["serving_default"]
    message = ("expected to be a uint8 tensor" if images.dtype != tf.uint8
               else r"expected a uint8 tensor of shape \(batch, 28, 28, 1\)")
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(images=images)


def test_checked_serving_function_refuses_numpy_casts(exported, finished_run):
    serve = export.load_serving_function(str(exported))
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), np.uint8)
    with pytest.raises(TypeError, match="Expected uint8 pixels. Received: float32"):
        serve(images.astype(np.float32) / 255)
    model, *_ = training.open_run(str(finished_run[0])).load_model()
    expected = tf.nn.softmax(model(data.resolve("mnist_small").serving_preprocess(
        tf.constant(images)), training=False)).numpy()
    np.testing.assert_allclose(serve(images)["probabilities"].numpy(), expected,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="complete export"):
        export.load_serving_function(str(exported / "nothing"))


def test_interrupted_export_keeps_the_previous_one(finished_run, tmp_path, monkeypatch):
    export_dir = tmp_path / "export"
    first = export.export_model(str(finished_run[0]), str(export_dir), checkpoint="latest")
    before = _snapshot(export_dir)
    save = tf.saved_model.save

    def crash(module, path, **kwargs):
        save(module, path, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(OSError):
        export.export_model(str(finished_run[0]), str(export_dir), checkpoint="best")
    assert _snapshot(export_dir) == before  # Staging removed, export intact.
    staging = export_dir / ".staging-host-1-2"  # As a SIGKILL leaves it.
    staging.mkdir()
    monkeypatch.undo()
    second = export.export_model(str(finished_run[0]), str(export_dir), checkpoint="latest")
    assert sorted(os.listdir(export_dir)) == sorted(
        [export.SAVED_MODEL_DIR, export.KERAS_FILE, export.SERVING_METADATA_FILE])
    assert second["step"] == first["step"] == 6


# ----------------------------------------------------------------------------
# The fault-injection helpers themselves.


def test_fault_injection_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="mode.*'shred'"):
        fi.corrupt_checkpoint(str(tmp_path / "ckpt-1"), "shred")
    tracker = fi.PhaseTracker()
    with pytest.raises(ValueError, match="phase.*'sleep'"):
        tracker.arm_kill("sleep", 1, 0.0)
    with pytest.raises(ValueError, match="occurrence"):
        tracker.arm_kill("step", 0, 0.0)


def test_metrics_report_counts_missing_duplicate_unexpected(tmp_path):
    lines = [("valid", 3), ("valid", 3), ("valid", 5), ("test", 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps(dict(split=s, step=t)) + "\n" for s, t in lines))
    report = fi.metrics_report(str(tmp_path), 6, 3)
    assert report["expected"] == [("valid", 3), ("valid", 6), ("test", 6)]
    assert report["missing"] == [("valid", 6)]
    assert report["duplicates"] == [("valid", 3)]
    assert report["unexpected"] == [("valid", 5)]


# ----------------------------------------------------------------------------
# The campaign's report.


def test_campaign_reports_a_check_that_cannot_run_as_skipped(tmp_path):
    workspace = campaign_runs.Workspace(tmp_path / "campaign")
    rows = campaign_bad_inputs.bad_data(workspace, str(tmp_path / "no_tfds"))
    reason = f"real MNIST not found at {tmp_path / 'no_tfds' / 'mnist'} (--tfds_dir)"
    fault = "Data: corrupted shard / missing split"
    assert rows == [campaign_report.skipped_row(fault, reason)]
    rows = [campaign_report.row("CLI: unknown preset", 1, True, 0, {}),
            campaign_report.row("NaN loss", 1, False, 1, {})] + rows
    summary = campaign_report.summarize(rows, [], [], 1.0, "python -m tools.fault_campaign")
    assert (summary["bad_input_cases"], summary["bad_input_cases_refused_clearly"]) == (1, 1)
    assert (summary["trainer_faults_injected"], summary["trainer_faults_survived"]) == (1, 0)
    assert summary["data_lost"] == 1
    assert summary["checks_skipped"] == 1
    assert summary["skipped"] == [dict(fault=fault, reason=reason)]
    table = campaign_report.markdown(rows, summary).splitlines()
    assert f"| {fault} | skipped: {reason} | — | — |" in table
    assert "| CLI: unknown preset | 1 | 1 | 0 |" in table
    assert f"- skipped: {fault}: {reason}" in table
    assert campaign_report.not_survived(rows) == ["NaN loss"]


def test_campaign_progress_counts_skips_crashes_and_beats():
    stream = io.StringIO()
    progress = campaign_progress.Progress(heartbeat_seconds=None, stream=stream)
    progress.scenario("bad data", lambda: [campaign_report.skipped_row("Data: x", "no MNIST")])
    progress.scenario("serving", lambda: [campaign_report.row("Serving: y", 2, 1, 0, {})])
    crashed = progress.scenario("broken", lambda: 1 / 0)
    assert crashed == [campaign_report.row("broken: the check itself failed", 1, 0, 0,
                                           crashed[0]["details"])]
    assert "ZeroDivisionError" in crashed[0]["details"]["traceback"][-1]
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("] started bad data")
    assert "] finished bad data in " in lines[1]
    assert lines[1].endswith("; skipped Data: x: no MNIST (so far 0/0 survived, 1 skipped)")
    assert lines[3].endswith(": 1/2 survived (so far 1/2 survived, 1 skipped)")
    assert lines[-1].endswith(": 0/1 survived (so far 1/3 survived, 1 skipped)")

    beating = campaign_progress.Progress(heartbeat_seconds=0.05, stream=stream)
    deadline = time.time() + 120

    def silent():  # Until the heartbeat names it (no timing asserted).
        while "still running: silent (" not in stream.getvalue() and time.time() < deadline:
            time.sleep(0.02)
        return []

    beating.scenario("silent", silent)
    beating.close()
    assert "still running: silent (" in stream.getvalue()

"""Tests of the grid's worker processes: outcomes, logs, and stopping them all."""

import os
import signal
import time

import pytest

from low_rank_local_connectivity.experiments import workers as workers_lib


# Jobs: module-level functions, so that a spawned process can import them.
def _add(a, b):
    print("adding", flush=True)
    return a + b


def _fail(text):
    raise ValueError(f"bad   value\n{text}")


def _die():
    os._exit(3)


def _sleep():
    time.sleep(600)


def test_outcomes_and_logs(tmp_path):
    with workers_lib.stopped_by_signals() as workers:
        for name, function, args in (("add", _add, (2, 3)), ("fail", _fail, ("x",)),
                                     ("die", _die, ())):
            workers.start(name, function, args, str(tmp_path / name / "log"))
        outcomes = {}
        while len(workers):
            outcomes.update((name, (status, value))
                            for name, status, value in workers.wait())
    assert outcomes == {
        "add": ("finished", 5),
        "fail": ("failed", "ValueError: bad value x"),
        "die": ("failed", "its worker process exited with status 3 before "
                          "reporting a result"),
    }
    add_log = (tmp_path / "add" / "log").read_text()
    assert "add: worker process " in add_log and "adding" in add_log
    fail_log = (tmp_path / "fail" / "log").read_text()
    assert "fail failed." in fail_log and "Traceback" in fail_log


def test_leaving_the_block_stops_running_workers(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="grid bug"):
        with workers_lib.stopped_by_signals() as workers:
            workers.start("sleep", _sleep, (), str(tmp_path / "log"))
            process = workers._running[0].process
            assert signal.getsignal(signal.SIGTERM) is not previous
            raise RuntimeError("grid bug")
    # SIGTERM, or SIGKILL when it was still starting (signals blocked).
    assert not process.is_alive() and process.exitcode in (-signal.SIGTERM, -signal.SIGKILL)
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_signal_raises_grid_interrupted_with_the_shell_status(tmp_path):
    with pytest.raises(workers_lib.GridInterrupted) as interrupted:
        with workers_lib.stopped_by_signals() as workers:
            workers.start("sleep", _sleep, (), str(tmp_path / "log"))
            process = workers._running[0].process
            os.kill(os.getpid(), signal.SIGTERM)
            workers.wait()  # Interrupted by the handler.
    assert interrupted.value.exit_status == 143
    assert str(interrupted.value).startswith("Interrupted by SIGTERM: ")
    assert not process.is_alive()

"""Worker processes of a grid: one per job, stopped together on SIGINT or SIGTERM.

`Workers` starts each job (a module-level function and its arguments) in its own
spawned process whose output goes to the job's log file, and collects each
job's outcome: ('finished', its return value) or ('failed', 'ErrorType:
message'), the traceback going to the log. `stopped_by_signals` turns SIGINT
and SIGTERM into `GridInterrupted` and, however the block ends, stops every
worker still running, so that no worker outlives the grid.

On Ctrl-C the terminal signals the whole process group. The workers ignore
SIGINT from their first instruction; the parent stops them with SIGTERM (SIGKILL
after `STOP_SECONDS`).
"""

import contextlib
import dataclasses
import multiprocessing
from multiprocessing import connection
import os
import signal
import threading
import time

from absl import logging

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds a terminated worker gets to exit before it is killed.
STOP_SECONDS = 5.0
# Longest error message a worker reports (the traceback is in its log), so that
# the message fits in a pipe's buffer.
_MAX_MESSAGE_CHARS = 2000


class GridInterrupted(KeyboardInterrupt):
    """The grid was stopped by a signal; its workers are stopped too.

    Attributes:
        signal_number: int, the signal (SIGINT or SIGTERM).
        exit_status: int, the shell's status for it (128 + signal number).
    """

    def __init__(self, signal_number):
        self.signal_number = signal_number
        self.exit_status = 128 + signal_number
        super().__init__(
            f"Interrupted by {signal.Signals(signal_number).name}: the grid and "
            "its workers stopped. Rerunning the same command resumes it: "
            "finished cells are skipped, interrupted ones resume from their "
            "last checkpoint."
        )


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


def _job_process(name, function, args, log_path, results):
    """The body of a worker process: runs `function(*args)`, sends its outcome."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # `Workers.start` may have passed both signals on blocked.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    logging.info("%s: worker process %d.", name, os.getpid())
    try:
        outcome = ("finished", function(*args))
    except Exception as error:  # Reported to the parent; the other jobs go on.
        logging.exception("%s failed.", name)
        message = f"{type(error).__name__}: {' '.join(str(error).split())}"
        if len(message) > _MAX_MESSAGE_CHARS:
            message = message[:_MAX_MESSAGE_CHARS] + " ... (see the log)"
        outcome = ("failed", message)
    results.send(outcome)


@dataclasses.dataclass
class _Worker:
    name: str
    process: object
    results: object  # The receiving end of the worker's pipe.


class Workers:
    """The running worker processes of a grid (spawned, one per job)."""

    def __init__(self):
        self._context = multiprocessing.get_context("spawn")
        self._running = []

    def __len__(self):
        return len(self._running)

    def start(self, name, function, args, log_path):
        """Starts `function(*args)` in a new process logging to `log_path`.

        SIGINT is ignored in the new process from its first instruction (the
        disposition is inherited). SIGINT and SIGTERM are blocked meanwhile: one
        that arrives stays pending and is handled once the worker is listed, so
        that stopping the grid stops it too.
        """
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_job_process, name=name, daemon=True,
            args=(name, function, args, log_path, sender),
        )
        main_thread = _in_main_thread()
        if main_thread:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
            self._running.append(_Worker(name, process, receiver))
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, handler)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            sender.close()

    def wait(self):
        """Waits for at least one worker to exit.

        Returns:
            List of (name, status, value) of the exited workers: ('finished',
            the job's return value) or ('failed', an error message).
        """
        ready = connection.wait([worker.process.sentinel for worker in self._running])
        exited = [w for w in self._running if w.process.sentinel in ready]
        for worker in exited:
            self._running.remove(worker)
        return [(worker.name, *self._outcome(worker)) for worker in exited]

    @staticmethod
    def _outcome(worker):
        worker.process.join()
        try:
            if worker.results.poll():
                return worker.results.recv()
        except (EOFError, OSError):
            pass
        finally:
            worker.results.close()
        return ("failed", f"its worker process exited with status "
                          f"{worker.process.exitcode} before reporting a result")

    def stop(self):
        """Terminates the running workers (SIGTERM, then SIGKILL)."""
        for worker in self._running:
            worker.process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self._running:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.results.close()
        self._running = []


def _handle_signals(handler):
    """Installs `handler` for `STOP_SIGNALS`; returns the previous handlers.

    Only the main thread can: elsewhere nothing is installed and {} returned.
    """
    if not _in_main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}


@contextlib.contextmanager
def stopped_by_signals():
    """Yields a `Workers`; SIGINT / SIGTERM raise `GridInterrupted` meanwhile.

    However the block ends, the workers still running are stopped (a second
    signal does not interrupt that) and the previous handlers restored.
    Signals are only handled in the main thread.
    """

    def interrupted(signal_number, frame):
        del frame
        raise GridInterrupted(signal_number)

    previous = _handle_signals(interrupted)
    workers = Workers()
    try:
        yield workers
    finally:
        _handle_signals(signal.SIG_IGN)
        workers.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

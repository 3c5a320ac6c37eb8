"""Progress lines of the fault campaign.

One line when a scenario starts and one when it finishes (its name, the
elapsed time, and the faults injected / survived so far), one per SIGKILL of
the preemption section, and a line naming the scenarios still running when
nothing was printed for `heartbeat_seconds`; the same thread samples the
machine's load average. Scenarios run in threads; every method may be called
from any of them.
"""

import os
import sys
import threading
import time
import traceback

from tools import campaign_report as report


class Progress:
    """Prints the campaign's progress to `stream`.

    Args:
        heartbeat_seconds: float, longest silence before a 'still running'
            line (None: no heartbeat).
        stream: file object receiving the lines.
    """

    def __init__(self, heartbeat_seconds=30.0, stream=sys.stdout):
        self.start_time = time.time()
        self.injected = 0
        self.survived = 0
        self.skipped = 0
        self._stream = stream
        self._running = {}
        self._last_line = self.start_time
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._load = []
        self._heartbeat = None
        if heartbeat_seconds:
            self._heartbeat = threading.Thread(
                target=self._beat, args=(heartbeat_seconds,), daemon=True)
            self._heartbeat.start()

    def elapsed(self):
        return time.time() - self.start_time

    def say(self, message):
        """Prints one line, prefixed with the elapsed time."""
        with self._lock:
            self._last_line = time.time()
            print(f"[{_clock(self.elapsed())}] {message}", file=self._stream, flush=True)

    def started(self, name):
        with self._lock:
            self._running[name] = time.time()
            self.say(f"started {name}")

    def finished(self, name, injected=0, survived=0, skipped=()):
        """Counts a finished scenario; `skipped` lists the reasons of its skips."""
        with self._lock:
            took = time.time() - self._running.pop(name, time.time())
            self.injected += injected
            self.survived += survived
            self.skipped += len(skipped)
            result = f": {survived}/{injected} survived" if injected else ""
            result += "".join(f"; skipped {reason}" for reason in skipped)
            self.say(f"finished {name} in {_clock(took)}{result} (so far "
                     f"{self.survived}/{self.injected} survived, "
                     f"{self.skipped} skipped)")

    def scenario(self, name, function, *args):
        """Runs a scenario returning report rows, between its two lines.

        A scenario that raises becomes one row that did not survive, with
        the traceback: the other scenarios' results are kept.
        """
        self.started(name)
        try:
            rows = function(*args)
        except Exception:  # The campaign reports it and goes on.
            rows = [self.failure(name)]
        self.finished(name, sum(r["injected"] for r in rows),
                      sum(r["survived"] for r in rows),
                      [f"{r['fault']}: {r['skipped']}" for r in rows if r.get("skipped")])
        return rows

    def failure(self, name):
        """Prints the exception being handled in check `name`; returns the
        row of a check that failed (injected once, not survived)."""
        error = traceback.format_exc()
        self.say(f"error in {name}:\n{error}")
        return report.row(f"{name}: the check itself failed", 1, 0, 0,
                          dict(traceback=error.splitlines()[-20:]))

    def close(self):
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()

    def load_average(self):
        """Mean and largest 1-minute load average sampled while it ran."""
        with self._lock:
            samples = list(self._load) or [os.getloadavg()[0]]
        return dict(mean_1min=round(sum(samples) / len(samples), 1),
                    max_1min=round(max(samples), 1))

    def _beat(self, seconds):
        while not self._stop.wait(min(seconds, 5.0)):
            with self._lock:
                self._load.append(os.getloadavg()[0])
                if time.time() - self._last_line < seconds:
                    continue
                running = ", ".join(
                    f"{name} ({_clock(time.time() - since)})"
                    for name, since in self._running.items()) or "nothing"
                self.say(f"still running: {running}")


def _clock(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"

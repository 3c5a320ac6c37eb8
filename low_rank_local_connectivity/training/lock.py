"""The exclusive lock of a `model_dir` (`lock.json`), held by one trainer at a time."""

import contextlib
import json
import os
import socket
import threading
import time

from absl import logging

from low_rank_local_connectivity.training import errors
from low_rank_local_connectivity.training import run_dir


def process_alive(pid):
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, owned by another user.
        return True
    return True


class ModelDirLock:
    """An exclusive lock on a `model_dir`, held by one trainer at a time.

    The lock is the file `<model_dir>/lock.json` holding the owner's pid,
    host name, start time and a heartbeat time that a background thread
    refreshes every `heartbeat_seconds`. It is created atomically (written
    to a private file, then hard-linked to its name, which fails if the name
    exists). An existing lock is stale, and is taken over with a warning, when
    its owner is on this host and its pid is dead (a crashed or killed
    trainer), or when its heartbeat is older than `stale_seconds` (a crashed
    trainer on another host). Otherwise `acquire` raises
    `ModelDirLockedError`. Directories that are not on the local file
    system (e.g. 'gs://') are not locked.

    Args:
        model_dir: str, the directory to lock (created if needed).
        heartbeat_seconds: float, interval of the heartbeat.
        stale_seconds: float, age after which a heartbeat is stale.

    Raises:
        ValueError: if `stale_seconds` is not larger than `heartbeat_seconds`.
    """

    def __init__(self, model_dir, heartbeat_seconds=30.0, stale_seconds=300.0):
        if not 0 < heartbeat_seconds < stale_seconds:
            raise ValueError(
                "Invalid values for arguments `heartbeat_seconds` and "
                "`stale_seconds`. Expected 0 < heartbeat_seconds < "
                f"stale_seconds. Received: {heartbeat_seconds}, {stale_seconds}"
            )
        self.path = os.path.join(model_dir, run_dir.LOCK_FILE)
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self._local = "://" not in model_dir
        self._owner = None
        self._stop = threading.Event()
        self._thread = None

    def _read(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # Unreadable: judged by the file's age below.

    def _stale_reason(self, owner):
        """Why the lock held by `owner` is stale, or None if it is live."""
        if not owner:
            try:
                age = time.time() - os.path.getmtime(self.path)
            except OSError:
                return "it disappeared"
            return (f"it is unreadable and {age:.0f} s old"
                    if age > self.heartbeat_seconds else None)
        age = time.time() - float(owner.get("heartbeat", 0))
        if age > self.stale_seconds:
            return f"its heartbeat is {age:.0f} s old"
        if owner.get("hostname") == socket.gethostname() and not process_alive(
            int(owner.get("pid", -1))
        ):
            return f"process {owner.get('pid')} is no longer running"
        return None

    def _write_owner(self, path):
        self._owner["heartbeat"] = time.time()
        with open(path, "w") as f:
            json.dump(self._owner, f)

    def acquire(self):
        """Takes the lock (taking over a stale one).

        Raises:
            ModelDirLockedError: if another live trainer holds it.
            ModelDirWriteError: if the lock file cannot be written.
        """
        if not self._local:
            logging.warning("%s is not local: it is not locked.", self.path)
            return self
        self._owner = dict(
            pid=os.getpid(), hostname=socket.gethostname(), started=time.time(),
            token=f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}",
        )
        private = f"{self.path}.{self._owner['token']}"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._write_owner(private)
            for _ in range(10):
                try:
                    os.link(private, self.path)
                    break
                except FileExistsError:
                    owner = self._read()
                    reason = self._stale_reason(owner) if owner is not None else "gone"
                    if reason is None:
                        raise errors.ModelDirLockedError(
                            f"{os.path.dirname(self.path)} is in use by another "
                            f"trainer (pid {owner.get('pid')} on "
                            f"{owner.get('hostname')}, heartbeat "
                            f"{time.time() - float(owner.get('heartbeat', 0)):.0f}"
                            f" s ago; lock file {self.path}). Wait for it to "
                            "finish or use another model_dir."
                        ) from None
                    self._take_over(owner, reason)
            else:
                raise errors.ModelDirLockedError(
                    f"Could not take the lock {self.path}: it keeps changing."
                )
        except OSError as error:
            raise errors.ModelDirWriteError(
                f"Could not write the lock file {self.path} "
                f"({errors.one_line(error)}). Make the directory writable."
            ) from None
        finally:
            with contextlib.suppress(OSError):
                os.remove(private)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat, name="model_dir_lock_heartbeat", daemon=True
        )
        self._thread.start()
        return self

    def _take_over(self, owner, reason):
        """Moves a stale lock away unless it changed since it was judged."""
        if owner is None:
            return
        moved = f"{self.path}.stale-{self._owner['token']}"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return  # Another trainer took it over first: try again.
        try:
            with open(moved) as f:
                unchanged = json.load(f) == owner
        except (OSError, ValueError):
            unchanged = owner == {}
        if not unchanged:  # A fresh lock was moved by mistake: put it back.
            with contextlib.suppress(OSError):
                os.link(moved, self.path)
        else:
            logging.warning(
                "Taking over the stale lock %s of pid %s on %s: %s.",
                self.path, owner.get("pid"), owner.get("hostname"), reason,
            )
        os.remove(moved)

    def _beat(self):
        while not self._stop.wait(self.heartbeat_seconds):
            with contextlib.suppress(OSError):
                tmp = f"{self.path}.{self._owner['token']}.beat"
                self._write_owner(tmp)
                os.replace(tmp, self.path)

    def release(self):
        """Releases the lock if this object holds it."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            if self._read() == self._owner:
                with contextlib.suppress(OSError):
                    os.remove(self.path)
        self._owner = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()

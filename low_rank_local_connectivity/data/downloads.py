"""Fail-fast checks and clean-up around TFDS downloads.

Offline, TFDS retries a download whose host does not resolve for minutes, and
an interrupted download leaves partial files in the data_dir
(`downloads/<dataset>/*.tmp.*`, `downloads/extracted/`,
`<dataset>/incomplete.*`). `unreachable_host` finds out within seconds whether
the hosts of a download (or the proxy that serves them) accept connections,
and `removed_on_failure` deletes what a failed download left behind.
"""

import contextlib
import pathlib
import shutil
import socket
import threading
import urllib.parse
import urllib.request

CONNECT_TIMEOUT_SECONDS = 10.0
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def _endpoint(url, proxies):
    """(host, port) a download of `url` connects to: the URL's or its proxy's."""
    parsed = urllib.parse.urlparse(url)
    proxy = proxies.get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        parsed = urllib.parse.urlparse(proxy)
    return parsed.hostname, parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 443)


def _connection_failure(host, port, timeout):
    """Why a TCP connection to (host, port) fails, or None if it succeeds.

    Name resolution has no timeout of its own, so the attempt runs in a
    daemon thread that is abandoned after `timeout` seconds.
    """
    outcome = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as error:
            outcome["error"] = f"{type(error).__name__}: {error}"
        else:
            outcome["error"] = None

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome.get("error", f"no answer within {timeout:g} s")


def unreachable_host(urls, timeout=CONNECT_TIMEOUT_SECONDS):
    """The first endpoint of `urls` that does not accept a connection.

    Proxies from the environment (`https_proxy`, ...) are honoured: when one
    serves a URL, the proxy is what is checked.

    Args:
        urls: iterable of download URLs.
        timeout: float, seconds allowed per endpoint.

    Returns:
        None when every endpoint answers, else a pair ('host:port', reason).
    """
    proxies = urllib.request.getproxies()
    endpoints = {_endpoint(url, proxies) for url in urls}
    for host, port in sorted(endpoint for endpoint in endpoints if endpoint[0]):
        failure = _connection_failure(host, port, timeout)
        if failure is not None:
            return f"{host}:{port}", failure
    return None


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _tree(path):
    return {path, *path.rglob("*")} if path.exists() else set()


@contextlib.contextmanager
def removed_on_failure(directory, subdirectories):
    """Deletes, if the body raises, what it created in `directory`.

    Only `directory/<subdirectory>` trees are compared before and after (a
    data_dir may hold many other datasets); when `directory` itself did not
    exist, all of it is removed. The exception propagates.

    Args:
        directory: str or path, e.g. a TFDS data_dir.
        subdirectories: names inside `directory` that the body writes to.
    """
    directory = pathlib.Path(directory)
    existed = directory.exists()
    watched = [directory / name for name in subdirectories]
    before = set().union(*(_tree(path) for path in watched))
    try:
        yield
    except BaseException:
        if not existed:
            _remove(directory)
        else:
            created = set().union(*(_tree(path) for path in watched)) - before
            for path in sorted(created, key=lambda p: len(p.parts)):
                if path.exists() or path.is_symlink():
                    _remove(path)
        raise

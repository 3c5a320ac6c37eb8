"""Tests of `data.downloads`: fail-fast host checks (no network is touched)."""

import socket
import time

from low_rank_local_connectivity.data import downloads


def test_unreachable_host_checks_the_proxy_and_gives_up_in_time(monkeypatch):
    attempts = []

    def slow_name_resolution(host, port, *args, **kwargs):
        attempts.append((host, port))
        time.sleep(5)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure")

    monkeypatch.setattr(socket, "getaddrinfo", slow_name_resolution)
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert downloads.unreachable_host(
        ["https://storage.googleapis.com/a.gz", "https://storage.googleapis.com/b.gz"],
        timeout=0.2,
    ) == ("proxy.example:3128", "no answer within 0.2 s")
    assert attempts == [("proxy.example", 3128)]

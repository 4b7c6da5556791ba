"""A slowloris does not starve the default WSGI server (issue 11, item 6).

On main, 50 idle and 50 trickling connections took all 10 of cheroot's threads: 0 of 20 normal
requests were answered. Now cheroot's connection loop reads request heads and a worker thread
only gets a connection whose head is whole.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from contextlib import ExitStack

import pytest

from serving import get, hello_app, wsgi_hello
from wspbus.servers import HTTPServer
from wspbus.servers.request_head import HeadLimits

#: Seconds the 20 normal requests have, all together, while the hostile connections hang on.
DEADLINE = 5.0


class Slowloris:
    """``idle`` connections that send nothing and ``trickling`` ones that send a head a byte at a time."""

    def __init__(self, address, idle: int, trickling: int, pace: float = 0.2) -> None:
        self._stack = ExitStack()
        self.idle = [self._connect(address) for _ in range(idle)]
        self.trickling = [self._connect(address) for _ in range(trickling)]
        self._pace = pace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def _connect(self, address) -> socket.socket:
        return self._stack.enter_context(socket.create_connection(address, timeout=5))

    def _trickle(self) -> None:
        head = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"s" * 10_000
        for byte in range(len(head)):
            for sock in self.trickling:
                try:
                    sock.send(head[byte:byte + 1])
                except OSError:
                    pass  # closed by the server (its head timeout): that is what it may do
            if self._stop.wait(self._pace):
                return

    def __enter__(self) -> Slowloris:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._stack.close()


@pytest.mark.parametrize("server", ["auto", "waitress", "uvicorn", "granian"])
def test_normal_clients_are_answered_during_a_slowloris(bus, server):
    # auto: the default WSGI server, cheroot, 10 threads
    plugin = HTTPServer(bus, hello_app(server if server != "auto" else "cheroot"), "127.0.0.1:0", server=server,
                        protocol="asgi" if server == "uvicorn" else "wsgi")
    plugin.subscribe()
    bus.start()
    with Slowloris(plugin.address, idle=50, trickling=50):
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(get, plugin.address, "/n%d" % n, DEADLINE) for n in range(20)]
            done, _ = concurrent.futures.wait(futures, timeout=DEADLINE)
        answered = [f.result()[0] for f in done if f.exception() is None]
        assert answered == [200] * 20 and time.monotonic() - started < DEADLINE


@pytest.mark.parametrize("server", ["cheroot", "waitress"])
def test_a_head_that_does_not_arrive_in_time_ends_its_connection(bus, server):
    plugin = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server=server, limits=HeadLimits(head_timeout=0.5))
    plugin.subscribe()
    bus.start()
    with Slowloris(plugin.address, idle=1, trickling=1, pace=0.05) as slowloris:
        started = time.monotonic()
        for sock in slowloris.idle + slowloris.trickling:
            sock.settimeout(5)
            while sock.recv(1000):  # a trickler may get a 408 first
                pass
            # closed by the server, not ended by the timeout of this recv
        assert time.monotonic() - started < 3
    assert get(plugin.address)[0] == 200

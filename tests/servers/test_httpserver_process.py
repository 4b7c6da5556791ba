"""HTTPServer in real processes: a restart that loses no request, and a server death that ends
the process non-zero."""

from __future__ import annotations

import threading
import time

import pytest

from serving import SERVER_PROTOCOLS, get

SITE = r'''
import os, sys, threading, uuid
from wspbus import Bus
from wspbus.servers import HTTPServer

TOKEN = uuid.uuid4().hex[:12]  # new in each incarnation of the process
bind, server = sys.argv[1], sys.argv[2]  # binds: comma-separated

# Control through requests rather than signals: a signal that lands just before the main thread
# blocks in block() can wait there unhandled (a CPython limitation), which is not under test here.
CONTROL = {"/restart": lambda: bus.restart(), "/exit": lambda: bus.exit()}

def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/die":
        raise SystemExit(3)  # kills the serving thread (cheroot turns it into a server interrupt)
    if path in CONTROL:
        threading.Thread(target=CONTROL[path]).start()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [TOKEN.encode()]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")
    if scope["path"] in CONTROL:
        threading.Thread(target=CONTROL[scope["path"]]).start()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"12")]})
    await send({"type": "http.response.body", "body": TOKEN.encode()})

protocol = "asgi" if server == "uvicorn" else "wsgi"
bus = Bus(graceful_timeout=5)
plugins = [HTTPServer(bus, asgi if protocol == "asgi" else wsgi, text, server=server, protocol=protocol,
                      access_log=False) for text in bind.split(",")]
for plugin in plugins:
    plugin.subscribe()
bus.start()
print("serving", TOKEN, ",".join(str(plugin.address[1]) for plugin in plugins), flush=True)
bus.block()
print("exit status", bus.exit_code, flush=True)
sys.exit(bus.exit_code)
'''


class SteadyClient:
    """Sends GETs back to back, each on a fresh connection, and records what came back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[float, object, object]] = []
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(("127.0.0.1", self.port), timeout=10)
                result = (time.monotonic(), status, body.decode())
            except Exception as exc:  # a failed request is what this test counts
                result = (time.monotonic(), "error", repr(exc))
            with self._changed:
                self.results.append(result)
                self._changed.notify_all()

    def wait_for(self, count: int, token: str, timeout: float = 15.0) -> None:
        def enough():
            return sum(1 for _, status, body in self.results if body == token) >= count
        with self._changed:
            assert self._changed.wait_for(enough, timeout), "no %d responses from %s" % (count, token)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.mark.parametrize("server", sorted(SERVER_PROTOCOLS))
def test_restart_keeps_the_socket_and_loses_no_request(spawn, server):
    child = spawn(SITE, "127.0.0.1:0", server)
    first = child.expect(r"^serving (\w+) (\d+)$")
    old_token, port = first[1], int(first[2])
    client = SteadyClient(port)
    try:
        client.wait_for(20, old_token)
        assert get(("127.0.0.1", port), "/restart")[0] == 200
        second = child.expect(r"^serving (\w+) (\d+)$")
        new_token = second[1]
        assert new_token != old_token and int(second[2]) == port  # re-executed, same socket
        client.wait_for(20, new_token)
    finally:
        client.stop()
    results = client.results
    failures = [result for result in results if result[1] != 200]
    assert failures == [], "%d of %d requests failed: %s" % (len(failures), len(results), failures[:3])
    tokens = [body for _, _, body in results]
    switch = tokens.index(new_token)
    assert set(tokens[:switch]) == {old_token} and set(tokens[switch:]) == {new_token}
    gap = max(later[0] - earlier[0] for earlier, later in zip(results, results[1:], strict=False))
    print("%s: %d requests, 0 failed, longest gap %.3f s" % (server, len(results), gap))
    get(("127.0.0.1", port), "/exit")
    assert child.wait() == 0


def test_server_death_ends_the_process_with_status_1(spawn):
    child = spawn(SITE, "127.0.0.1:0", "cheroot")
    port = int(child.expect(r"^serving (\w+) (\d+)$")[2])
    try:
        get(("127.0.0.1", port), "/die", timeout=5)
    except Exception:
        pass  # the connection may close without an answer: the server is going down
    child.expect(r"HTTP server http://127\.0\.0\.1:%d \(cheroot\) died: SystemExit: 3; exiting" % port)
    child.expect(r"^exit status 1$")
    assert child.wait() == 1


def test_two_servers_on_the_same_bind_text_each_get_their_own_socket_back(spawn):
    child = spawn(SITE, "127.0.0.1:0,127.0.0.1:0", "cheroot")
    first = child.expect(r"^serving (\w+) (\d+),(\d+)$")
    ports = [int(first[2]), int(first[3])]
    assert ports[0] != ports[1]
    get(("127.0.0.1", ports[0]), "/restart")
    second = child.expect(r"^serving (\w+) (\d+),(\d+)$")
    assert [int(second[2]), int(second[3])] == ports  # each name ('TEXT', 'TEXT#2') found its socket
    for port in ports:
        assert get(("127.0.0.1", port)) == (200, second[1].encode())
    get(("127.0.0.1", ports[0]), "/exit")
    assert child.wait() == 0

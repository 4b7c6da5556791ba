"""An ASGI site out of descriptors logs the failed accepts once, then a count (issue 11, item 7).

On main, `ulimit -n 64` and 200 concurrent clients wrote 64.5 MB of identical tracebacks in 8 s:
CPython's selector loop, on EMFILE, logs through the loop's exception handler (logger 'asyncio')
once per accept it tries (up to the listen backlog per wake-up: it does not stop at the first
failure, python/cpython#151615, fixed upstream after 3.11). LogRouter now routes 'asyncio' to
the error log, whose RepeatLimiter writes the first traceback and counts the rest. (CPython also
schedules one retry per failed accept, and these fail at the stop on the closed socket: a second
flood, bounded the same way.)
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import threading
import time

from serve_support import banner_port

LIMITED_WSPBUS = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
sys.argv[0] = "wspbus"
runpy.run_module("wspbus", run_name="__main__", alter_sys=True)
"""

APP = """
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
"""


def flood(port: int, clients: int, seconds: float) -> int:
    """``clients`` threads connect, ask, hold the connection a moment and again, for ``seconds``;
    the number of answers."""
    ends = time.monotonic() + seconds
    answered = []

    def client() -> None:
        while time.monotonic() < ends:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                    if sock.recv(100).startswith(b"HTTP/1.1 200"):
                        answered.append(1)
                    time.sleep(0.2)  # holding the descriptor is the point
            except OSError:
                pass  # refused, reset or timed out: the server is out of descriptors

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 5)
    return len(answered)


def test_accept_failures_are_logged_once_then_counted(spawn, tmp_path):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "limited.py").write_text(LIMITED_WSPBUS)
    child = spawn([sys.executable, "limited.py", "serve", "app:app", "--bind", "127.0.0.1:0"], cwd=tmp_path)
    port = banner_port(child.expect(r"^wspbus: serving (\S+)$").group(1))
    assert flood(port, clients=200, seconds=3) > 0
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    output = child.output()
    assert len(output) < 100_000, "%d bytes of log" % len(output)
    # The accept failure once; at the stop, perhaps the retries asyncio scheduled for it once more
    # (each fails on the closed socket: 'Exception in callback ..._start_serving').
    assert output.count("Traceback") <= 2, output[-3000:]
    assert output.count("socket.accept() out of system resource\n") == 1, output[-3000:]
    # One failed accept per wake-up, and the loop wakes again a second later: a few, not thousands.
    repeats = re.search(r"socket.accept\(\) out of system resource \.\.\. repeated (\d+) times", output)
    assert repeats and int(repeats.group(1)) < 100, output[-3000:]

"""A bus inside a process another program owns: wspbus.deploy.hosted.attach() under a real gunicorn."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from support import http_get

import wspbus
from wspbus.deploy.hosted import attach, detach

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hosted_gunicorn"


def start_gunicorn(spawn, hits_file: Path):
    child = spawn([sys.executable, "-m", "gunicorn", "--chdir", str(EXAMPLE), "--workers", "1",
                   "--bind", "127.0.0.1:0", "--graceful-timeout", "10", "counter_site:application"],
                  env={"HITS_FILE": str(hits_file), "HITS_FLUSH_EVERY": "3600"})
    port = int(child.expect(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
    worker = int(child.expect(r"Booting worker with pid: (\d+)").group(1))
    return child, port, worker


def get_when_ready(port: int, path: str = "/"):
    """The worker may still be importing the app when gunicorn says it boots: retry the connect."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return http_get("127.0.0.1", port, path)
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def stop(child) -> float:
    began = time.monotonic()
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    return time.monotonic() - began


def test_a_plugin_starts_and_stops_with_each_gunicorn_worker(spawn, tmp_path):
    hits = tmp_path / "hits.json"
    child, port, worker = start_gunicorn(spawn, hits)
    for expected in (1, 2, 3):
        assert get_when_ready(port) == (200, b"hit %d, served by worker %d\n" % (expected, worker))
    took = stop(child)
    # 'stop' ran in the worker: it ended the non-daemon flusher thread and saved the count
    # (the flusher's own period is an hour, so only 'stop' can have written the file).
    assert json.loads(hits.read_text()) == {"hits": 3, "pid": worker}
    assert took < 8, "the worker hung on its non-daemon thread until gunicorn killed it (%.1fs)" % took

    child, port, worker = start_gunicorn(spawn, hits)
    # 'start' ran in the new worker: it loaded the saved count.
    assert get_when_ready(port) == (200, b"hit 4, served by worker %d\n" % worker)
    stop(child)
    assert json.loads(hits.read_text())["hits"] == 4


def test_the_bus_exits_when_the_interpreter_ends_before_threads_are_joined(spawn):
    child = spawn("""
        import threading
        import wspbus
        from wspbus.deploy.hosted import attach

        stopping = threading.Event()
        worker = threading.Thread(target=stopping.wait, name="non-daemon worker")

        def start():
            worker.start()
            print("started", flush=True)

        def stop():
            stopping.set()
            print("stopped", flush=True)

        wspbus.bus.subscribe("start", start)
        wspbus.bus.subscribe("stop", stop)
        attach()
        attach()  # a second attach (another module of the same worker) does not start again
        print("main thread done", flush=True)
    """)
    child.expect("^started$")
    child.expect("main thread done")
    child.expect("^stopped$")
    assert child.wait() == 0
    assert "started" not in child.output()  # the one "started" line was consumed by expect()


def test_attach_returns_the_app_or_a_site_of_several(tmp_path):
    def hello(environ, start_response):
        start_response("200 OK", [])
        return [environ["SCRIPT_NAME"].encode()]

    bus = wspbus.Bus()
    try:
        assert attach(hello, bus=bus) is hello
        assert bus.state is wspbus.states.STARTED
        site = attach({"/": hello, "/api": hello}, bus=bus)
        environ = {"PATH_INFO": "/api/x", "SCRIPT_NAME": "", "REQUEST_METHOD": "GET"}
        assert site(environ, lambda status, headers: None) == [b"/api"]
    finally:
        detach(bus)
        detach(bus)
    assert bus.state is wspbus.states.EXITING

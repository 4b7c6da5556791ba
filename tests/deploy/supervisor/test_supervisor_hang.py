"""--worker-timeout: a worker that stops sending heartbeats (hung, holding the GIL) has its stacks logged and is replaced."""

from __future__ import annotations

import re
import textwrap
import threading
import time

from supervised import wait_gone

from support import DEADLINE


def test_a_hung_worker_gets_its_stacks_dumped_and_is_replaced(site):
    child = site.serve("--worker-timeout", "2", workers=2)
    threading.Thread(target=_ignore_errors, args=(site.get, "/spin", 30), daemon=True).start()
    spinning, started = _wait_for_silence(child)
    replaced = child.expect(r"worker (\d+) \(generation 1\) replaces the worker of slot")
    took = time.monotonic() - started
    output = "\n".join(child.lines)
    assert re.search(r'File "%s", line \d+ in app' % re.escape(str(site.app_dir / "site_app.py")), output), output
    assert "Thread 0x" in output or "Current thread 0x" in output  # every thread's stack
    wait_gone([spinning])
    assert int(replaced.group(1)) in site.worker_pids()
    # The time is a figure to read (the timeout + 1 s on an idle machine), not to assert on a shared one.
    print("hung worker: silent for the 2 s timeout, replaced %.2f s after the request began" % took)


def _wait_for_silence(child):
    """The hung worker's pid, and when its silence began; it was judged hung only after the timeout."""
    match = child.expect(r"worker (\d+) \(generation 1\) sent no heartbeat for ([\d.]+) s", timeout=DEADLINE)
    assert float(match.group(2)) >= 2.0
    return int(match.group(1)), time.monotonic() - float(match.group(2))


def _ignore_errors(call, *args):
    try:
        call(*args)
    except OSError:
        pass  # the worker it hung was killed: no answer will come


def test_an_asgi_worker_whose_event_loop_is_blocked_is_replaced_too(site):
    (site.app_dir / "blocking_asgi.py").write_text(textwrap.dedent("""
        import os
        import time

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            if scope["path"] == "/block":
                time.sleep(60)  # a synchronous call in an async handler: the GIL is free, the loop is not
            body = b"%d" % os.getpid()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
    """))
    child = site.serve("--worker-timeout", "2", workers=1, app="blocking_asgi:app")
    blocked = int(site.get()[1])  # a first request: the heartbeats now go through the loop
    threading.Thread(target=_ignore_errors, args=(site.get, "/block", 30), daemon=True).start()
    silent, _ = _wait_for_silence(child)
    assert silent == blocked
    child.expect(r"replaces the worker of slot 0")
    output = "\n".join(child.lines)
    assert re.search(r'File "%s", line \d+ in app' % re.escape(str(site.app_dir / "blocking_asgi.py")), output), output
    wait_gone([blocked])
    assert int(site.get()[1]) != blocked


#: A line faulthandler writes (no comma before "in": a logged traceback has one).
DUMP_LINE = re.compile(r'File ".*", line \d+ in |Thread 0x|Current thread 0x|Fatal Python error')


def test_two_workers_hung_at_once_each_dump_line_names_its_worker(site):
    child = site.serve("--worker-timeout", "2", workers=2)
    spinning = _spin_both(site, child)
    for _ in spinning:
        child.expect(r"replaces the worker of slot")
    wait_gone(spinning)
    lines = [line for line in child.lines if DUMP_LINE.search(line)]
    named = {pid: [n for n, line in enumerate(lines) if "[worker %d]" % pid in line] for pid in spinning}
    assert all(any("[worker %d]" % pid in line for pid in spinning) for line in lines), "\n".join(lines)
    app_frame = re.compile(r'File "%s", line \d+ in app' % re.escape(str(site.app_dir / "site_app.py")))
    for pid, numbers in named.items():
        assert any(app_frame.search(lines[n]) for n in numbers), "\n".join(lines)
    first, second = sorted(named.values())
    assert first[-1] < second[0], "the two dumps interleave:\n" + "\n".join(lines)  # each dump whole


def _spin_both(site, child):
    """Hang both workers: a /spin on each (a spinning worker cannot accept, so the next goes to the other)."""
    pids: set[int] = set()
    while len(pids) < 2:
        threading.Thread(target=_ignore_errors, args=(site.get, "/spin", 30), daemon=True).start()
        pids.add(int(child.expect(r"^spinning in (\d+)").group(1)))
    return sorted(pids)


BLOCKING_WSGI = """
import os
import threading

NEVER = threading.Event()


def wait_for_nobody():
    NEVER.wait()  # releases the GIL: the worker's heartbeat thread runs on


def app(environ, start_response):
    if environ["PATH_INFO"] == "/block":
        os.write(1, b"blocked in %d\\n" % os.getpid())
        wait_for_nobody()
    body = b"%d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def test_a_wsgi_worker_whose_every_request_thread_is_stuck_is_replaced(site):
    (site.app_dir / "blocking_wsgi.py").write_text(BLOCKING_WSGI)
    child = site.serve("--worker-timeout", "2", "--threads", "2", workers=1, app="blocking_wsgi:app")
    stuck = int(site.get()[1])
    for _ in range(2):  # as many as the server has threads
        threading.Thread(target=_ignore_errors, args=(site.get, "/block", 30), daemon=True).start()
        assert int(child.expect(r"^blocked in (\d+)").group(1)) == stuck
    began = time.monotonic()
    child.expect(r"worker %d \(generation 1\) has all 2 request threads of http://\S+ \(cheroot\) busy, and no "
                 r"request began or ended for [\d.]+ s" % stuck)
    replaced = int(child.expect(r"worker (\d+) \(generation 1\) replaces the worker of slot 0").group(1))
    took = time.monotonic() - began
    wait_gone([stuck])
    frame = re.compile(r'\[worker %d\] .*File "%s", line \d+ in wait_for_nobody'
                       % (stuck, re.escape(str(site.app_dir / "blocking_wsgi.py"))))
    assert sum(1 for line in child.lines if frame.search(line)) == 2, "\n".join(child.lines)  # both threads
    assert int(site.get()[1]) == replaced
    print("stuck WSGI worker: replaced %.2f s after its last request began (--worker-timeout 2)" % took)
    assert took < 2 + 2


def test_a_slow_request_while_other_threads_are_free_keeps_its_worker(site):
    child = site.serve("--worker-timeout", "1.5", "--threads", "2", workers=1)
    pid = int(site.get()[1].split()[1])
    answers = []
    slow = threading.Thread(target=lambda: answers.append(site.get("/slow?4.5", timeout=30)))
    slow.start()
    child.expect(r"^slow request in %d" % pid)
    assert int(site.get()[1].split()[1]) == pid  # a free thread answers meanwhile
    slow.join(DEADLINE)
    assert answers and answers[0][0] == 200 and int(answers[0][1].split()[1]) == pid  # 3x the timeout, same worker
    assert site.worker_pids() == [pid]

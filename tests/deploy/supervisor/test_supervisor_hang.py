"""--worker-timeout: a worker that stops sending heartbeats (hung, holding the GIL) has its stacks logged and is replaced."""

from __future__ import annotations

import re
import threading
import time

from supervised import wait_gone


def test_a_hung_worker_gets_its_stacks_dumped_and_is_replaced_within_the_timeout_plus_2_s(site):
    child = site.serve("--worker-timeout", "2", workers=2)
    threading.Thread(target=_ignore_errors, args=(site.get, "/spin", 30), daemon=True).start()
    spinning, started = _wait_for_silence(child)
    replaced = child.expect(r"worker (\d+) \(generation 1\) replaces the worker of slot", timeout=10)
    took = time.monotonic() - started
    output = "\n".join(child.lines)
    assert re.search(r'File "%s", line \d+ in app' % re.escape(str(site.app_dir / "site_app.py")), output), output
    assert "Thread 0x" in output or "Current thread 0x" in output  # every thread's stack
    wait_gone([spinning])
    assert int(replaced.group(1)) in site.worker_pids()
    assert took < 2 + 2
    print("hung worker: silent for the 2 s timeout, replaced %.2f s after the request began" % took)


def _wait_for_silence(child):
    match = child.expect(r"worker (\d+) \(generation 1\) sent no heartbeat for ([\d.]+) s", timeout=10)
    return int(match.group(1)), time.monotonic() - float(match.group(2))


def _ignore_errors(call, *args):
    try:
        call(*args)
    except OSError:
        pass  # the worker it hung was killed: no answer will come

"""Stopping a supervised site: every worker at once, requests in flight answered, the whole stop bounded."""

from __future__ import annotations

import re
import signal
import socket
import textwrap
import time

from supervised import every_worker_busy, tagged_pids, wait_gone

from support import DEADLINE


def test_sigterm_answers_the_requests_in_flight_and_stops_every_worker_at_once(site):
    child = site.serve(workers=2)
    workers = site.worker_pids()
    replies = every_worker_busy(site, workers, "/slow?2", "slow request")
    child.send(signal.SIGTERM)
    assert [reply.result(DEADLINE)[0] for reply in replies] == [200] * len(replies)
    assert child.wait() == 0
    # At once, not one after the other: each worker was told to stop before any of them (each busy
    # with a request for 2 s) had ended.
    output = child.output()
    told = [output.index("[worker %d] The supervisor says stop" % pid) for pid in workers]
    ended = [output.index("[worker %d] Bus EXITED" % pid) for pid in workers]
    assert max(told) < min(ended), output
    assert not any(pid in tagged_pids(site.tag) for pid in workers)
    assert not site.pidfile.exists()


def test_graceful_timeout_bounds_the_whole_stop_and_names_the_stragglers(site):
    child = site.serve("--graceful-timeout", "2", workers=2)
    workers = site.worker_pids()
    # Hung for good, holding the GIL: only the supervisor's SIGKILL at the timeout ends them (a
    # worker merely slow could end on its own bound, which is the same timeout).
    futures = every_worker_busy(site, workers, "/spin", "spinning")
    started = time.monotonic()
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    took = time.monotonic() - started
    assert took < 2 + 10, took  # bounded by the timeout, not by the requests, which never end
    output = child.output()
    killed = re.findall(r"worker (\d+) \(generation 1\) still running 2 s after it was asked to stop: "
                        r"killing it \(SIGKILL\)", output)
    assert sorted(map(int, killed)) == sorted(workers), output
    for future in futures:
        assert future.exception(DEADLINE) is not None  # cut off: the bound wins over the hung request
    # The time is a figure to read (T + 0.2 s on an idle machine), not to assert on a shared one.
    print("stop with hung requests: %.2f s (graceful timeout 2 s)" % took)


def test_wspbus_stop_waits_for_the_supervisor_and_its_workers(site):
    site.serve(workers=3)
    workers = site.worker_pids()
    result = site.run("stop", "--pidfile", site.pidfile)
    assert result.returncode == 0 and "stopped the site (pid %d)" % site.child.pid in result.stdout
    assert site.child.wait() == 0
    assert not any(pid in tagged_pids(site.tag) for pid in workers)
    assert site.run("status", "--pidfile", site.pidfile).returncode == 3
    assert not (site.run_dir / "site.control.sock").exists()


def test_sigterm_while_the_workers_start_ends_the_site_cleanly(site):
    gate = "\0wspbus-test-gate-" + site.tag  # an abstract name: no path length limit
    (site.app_dir / "slow_start.py").write_text(textwrap.dedent("""
        import os
        import socket
        import wspbus

        def wait_for_the_gate():
            # A start listener after the servers (75) that takes a while (a pool warming up, say):
            # here, until the test closes the connection.
            with socket.socket(socket.AF_UNIX) as gate:
                gate.connect(%r)
                gate.recv(1)

        wspbus.bus.subscribe("start", wait_for_the_gate, priority=80)
        # On the signal's own channel, after the worker's own listener (priority 50) took note of it;
        # the log would tell only once the start is over (it is held until then).
        wspbus.bus.subscribe("SIGTERM", lambda: os.write(1, b"SIGTERM in %%d\\n" %% os.getpid()), priority=90)
    """ % gate))
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(gate)
        listener.listen()
        listener.settimeout(DEADLINE)
        child = site.serve("--import", "slow_start", workers=2, expect_banner=False)
        starting = [listener.accept()[0] for _ in range(2)]  # both workers are in their start listener
        child.send(signal.SIGTERM)
        for _ in range(2):
            child.expect(r"^SIGTERM in \d+$")
        for connection in starting:  # the start is over now, the stop comes after it
            connection.close()
    assert child.wait() == 0
    output = child.output()
    assert "wspbus: serving" not in output and "wspbus: error" not in output
    assert len(re.findall(r"SIGTERM while starting: stopping now that the start is over", output)) == 2, output
    wait_gone(tagged_pids(site.tag))


def test_sigterm_while_a_worker_imports_the_site_ends_it_at_once(site):
    site.write_app(extra="""
        import threading
        os.write(1, b"importing slowly\\n")
        threading.Event().wait(60)  # a slow import: nothing of the site runs yet, nothing to finish
    """)
    child = site.serve(workers=1, expect_banner=False)
    child.expect(r"^importing slowly$")
    child.send(signal.SIGTERM)
    assert child.wait() == 0  # within the wait's deadline, not after the import's 60 s
    assert "wspbus: serving" not in child.output()
    wait_gone(tagged_pids(site.tag))

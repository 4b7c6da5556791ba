"""Stopping a supervised site: every worker at once, requests in flight answered, the whole stop bounded."""

from __future__ import annotations

import concurrent.futures
import re
import signal
import textwrap
import time

from supervised import tagged_pids, wait_gone


def _in_flight(site, count: int, seconds: float) -> list[concurrent.futures.Future]:
    """``count`` requests taking ``seconds`` each, in the workers' hands once this returns."""
    pool = concurrent.futures.ThreadPoolExecutor(count)
    futures = [pool.submit(site.get, "/slow?%g" % seconds, seconds + 10) for _ in range(count)]
    pool.shutdown(wait=False)
    for _ in range(count):
        site.child.expect(r"^slow request in \d+")
    return futures


def test_sigterm_answers_the_requests_in_flight_and_exits_0(site):
    child = site.serve(workers=2)
    workers = site.worker_pids()
    replies = _in_flight(site, 4, 1)
    started = time.monotonic()
    child.send(signal.SIGTERM)
    assert [reply.result(10)[0] for reply in replies] == [200] * 4
    assert child.wait() == 0
    assert time.monotonic() - started < 2  # the workers stopped in parallel, not one after the other
    assert not any(pid in tagged_pids(site.tag) for pid in workers)
    assert not site.pidfile.exists()


def test_graceful_timeout_bounds_the_whole_stop_and_names_the_stragglers(site):
    child = site.serve("--graceful-timeout", "2", workers=2)
    futures = _in_flight(site, 2, 30)
    started = time.monotonic()
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    took = time.monotonic() - started
    assert took < 2.5, took  # T + 0.5 s, whatever is in flight
    output = child.output()
    killed = re.findall(r"worker (\d+) \(generation 1\) still running 2 s after it was asked to stop: "
                        r"killing it \(SIGKILL\)", output)
    assert len(killed) >= 1, output
    for future in futures:
        assert future.exception(10) is not None  # cut off: the bound wins over the hung request
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
    (site.app_dir / "slow_start.py").write_text(textwrap.dedent("""
        import threading
        import wspbus

        # A start listener after the servers (75) that takes a while: a pool warming up, say.
        wspbus.bus.subscribe("start", lambda: threading.Event().wait(1.5), priority=80)
    """))
    child = site.serve("--import", "slow_start", workers=2, expect_banner=False)
    for _ in range(2):
        child.expect(r"\[worker (\d+)\] Serving on")
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    output = child.output()
    assert "wspbus: serving" not in output and "wspbus: error" not in output
    assert len(re.findall(r"SIGTERM while starting: stopping now that the start is over", output)) == 2
    wait_gone(tagged_pids(site.tag))

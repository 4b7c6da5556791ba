"""Workers that die are replaced; workers that keep dying are restarted with a growing back-off."""

from __future__ import annotations

import os
import signal
import time

from serve_support import SteadyClient
from supervised import KeepAliveClient, wait_gone

from support import DEADLINE


def test_a_worker_killed_under_load_is_replaced_at_once_with_at_most_1_failed_request_per_client(site):
    site.serve(workers=2)
    victim, survivor = site.worker_pids()
    with SteadyClient(site.url) as fresh, KeepAliveClient(site.url) as kept:
        fresh.wait_for(b"v1")
        kept.wait_for("v1")
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        site.child.expect(r"worker %d \(generation 1\) was killed by SIGKILL; replacing it" % victim)
        replacement = site.child.expect(r"worker (\d+) \(generation 1\) replaces the worker of slot").group(1)
        replaced_after = time.monotonic() - killed
        served = len(fresh.bodies) + len(kept.bodies)
    assert "its replacement starts in" not in "\n".join(site.child.lines)  # a first death: no back-off
    # Each client may lose the one request it had on the killed worker (the keep-alive client its
    # connection), no more: the survivor and the replacement answer the rest.
    assert len(fresh.failures) <= 1 and len(kept.failures) <= 1, (fresh.failures, kept.failures)
    assert sorted(site.worker_pids()) == sorted([survivor, int(replacement)])
    # The time is a figure to read (2 s on an idle machine), not to assert on a shared one.
    print("SIGKILL: replaced in %.2f s, %d requests, failures %r" % (replaced_after, served,
                                                                     fresh.failures + kept.failures))


def test_a_worker_that_keeps_dying_is_restarted_with_a_growing_back_off(site):
    child = site.serve(workers=1)
    delays = []
    for death in range(1, 5):
        pid = site.wait_for_workers(1)[0]
        try:
            site.get("/crash", timeout=5)
        except OSError:
            pass  # the worker ended mid-request
        child.expect(r"worker %d \(generation 1\) exited with status 3; replacing it" % pid)
        if death > 1:
            delays.append(float(child.expect(r"died %d times in a row soon after starting: its replacement "
                                             r"starts in ([\d.]+) s" % death).group(1)))
        child.expect(r"replaces the worker of slot 0", timeout=DEADLINE + 2)
    assert delays == [0.25, 0.5, 1.0]
    assert site.get()[0] == 200


def test_workers_end_when_their_supervisor_is_killed(site):
    child = site.serve(workers=2)
    workers = site.worker_pids()
    os.kill(child.pid, signal.SIGKILL)
    wait_gone(workers)  # they exit on their own: their channel closed

"""Signals that reach the workers too: a stop sent to the whole group (Ctrl-C at a terminal,
systemd's default KillMode=control-group, ``kill -TERM -- -PGID``) is as graceful as one sent to the
supervisor, and an admin's SIGTERM to one worker replaces it with overlap. Whatever the number of
signals, each worker stops once."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import pytest
from supervised import KeepAliveClient, every_worker_busy, tagged_pids, wait_gone

from support import DEADLINE

DRAINED_SITE = """
    [[app]]
    target = "site_app:app"
    [plugins.health]
    [plugins.drain]
    drain_delay = 4
"""
CUT_OFF = "while shutting down: exiting now"  # a worker ended at once by a second signal


def _stopped_once_each(output: str, workers: list[int]) -> None:
    for pid in workers:
        assert output.count("[worker %d] Bus STOPPING" % pid) == 1, output
    assert CUT_OFF not in output, output


def _to_each(supervisor: int, workers: list[int], signum: int) -> None:
    """As systemd's KillMode=control-group signals a service: the main process first, then every
    other process of its cgroup, one kill() each."""
    for pid in [supervisor, *workers]:
        os.kill(pid, signum)


@pytest.mark.parametrize("signum, send", [
    (signal.SIGTERM, lambda supervisor, workers, signum: os.killpg(supervisor, signum)),  # kill -TERM -- -PGID
    (signal.SIGINT, lambda supervisor, workers, signum: os.killpg(supervisor, signum)),  # Ctrl-C at a terminal
    (signal.SIGTERM, _to_each),
], ids=["SIGTERM-group", "SIGINT-group", "SIGTERM-each-systemd"])
def test_a_signal_to_the_whole_group_finishes_the_requests_in_flight_and_stops_each_worker_once(site, signum, send):
    child = site.serve(workers=2)
    workers = site.worker_pids()
    replies = every_worker_busy(site, workers, "/slow?1.5", "slow request")
    send(child.pid, workers, signum)
    assert [reply.result(DEADLINE)[0] for reply in replies] == [200] * len(replies)
    assert child.wait() == 0
    _stopped_once_each(child.output(), workers)
    wait_gone(workers)


def test_sigterm_to_the_whole_group_honours_the_drain(site):
    child = site.serve_file(DRAINED_SITE)
    workers = site.wait_for_workers(2)
    replies = every_worker_busy(site, workers, "/slow?1", "slow request")
    with KeepAliveClient(site.url) as kept:
        kept.wait_for("v1")
        os.killpg(child.pid, signal.SIGTERM)  # systemd's KillMode=control-group, as far as the site can tell
        child.expect("SIGTERM: draining")
        for _ in range(10):  # new connections, while the drain lasts: not ready, and served
            assert site.get("/readyz")[0] == 503
            assert site.get("/")[0] == 200
        kept.wait_for_more()  # the keep-alive client is served through the drain
    assert kept.failures == []
    assert [reply.result(DEADLINE)[0] for reply in replies] == [200] * len(replies)
    assert child.wait() == 0
    output = child.output()
    _stopped_once_each(output, workers)
    # The workers stop once the supervisor does, at the end of the drain, not at their own SIGTERM.
    supervisor_stops = output.index(" INFO Bus STOPPING")
    assert all(supervisor_stops < output.index("[worker %d] Bus STOPPING" % pid) for pid in workers), output


def test_sigterm_to_one_worker_replaces_it_new_one_first(site):
    child = site.serve(workers=1)
    [old] = site.worker_pids()
    slow_client = concurrent.futures.ThreadPoolExecutor(1)
    with KeepAliveClient(site.url) as kept:
        kept.wait_for("v1 %d" % old)
        slow = slow_client.submit(site.get, "/slow?1.5", DEADLINE)
        child.expect(r"^slow request in %d$" % old)
        for _ in range(3):  # an impatient admin: still one replacement, one stop
            os.kill(old, signal.SIGTERM)
        child.expect(r"worker %d \(generation 1\) is replaced because it received SIGTERM" % old)
        [new] = site.wait_for_workers(1, excluding={old})
        kept.wait_for("v1 %d" % new)
        wait_gone([old])
    slow_client.shutdown()
    assert slow.result(DEADLINE)[0] == 200
    assert kept.failures == []
    assert child.proc.poll() is None  # the site serves on
    # A figure to read, not to assert on a shared machine.
    print("SIGTERM to the one worker: %d keep-alive requests, 0 failed, longest gap %.3f s"
          % (len(kept.bodies), kept.longest_gap))
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    output = child.output()
    assert "is replaced because" not in output, output  # once (the line expected above), not per signal
    assert "replacing it" not in output  # no crash: a replacement, new one first
    _stopped_once_each(output, [old, new])


def test_a_worker_whose_supervisor_does_not_answer_its_sigterm_stops_on_its_own(site):
    child = site.serve("--graceful-timeout", "1", workers=1)
    [worker] = site.worker_pids()
    os.kill(child.pid, signal.SIGSTOP)  # a supervisor that hangs
    try:
        os.kill(worker, signal.SIGTERM)
        child.expect(r"\[worker %d\] The supervisor did not answer within 1 s: stopping on its own" % worker)
        child.expect(r"\[worker %d\] Bus EXITED" % worker)
    finally:
        os.kill(child.pid, signal.SIGCONT)
    child.expect(r"worker %d \(generation 1\) exited with status 0; replacing it" % worker)
    site.wait_for_workers(1, excluding={worker})
    child.send(signal.SIGTERM)
    assert child.wait() == 0


def test_a_stop_while_a_sigtermed_worker_is_being_replaced_stops_every_worker_once(site):
    child = site.serve(workers=1)
    [old] = site.worker_pids()
    os.kill(old, signal.SIGTERM)
    child.expect(r"worker %d \(generation 1\) is replaced because it received SIGTERM" % old)
    child.send(signal.SIGTERM)  # the site stops while the replacement starts (or just after it serves)
    assert child.wait() == 0
    output = child.output()
    assert "could not start" not in output and "replacing it" not in output, output
    assert output.count("[worker %d] Bus STOPPING" % old) == 1, output
    assert CUT_OFF not in output, output
    wait_gone(tagged_pids(site.tag))


def test_a_worker_started_during_a_drain_is_not_ready_from_its_first_answer(site):
    """A worker that replaces one killed while the site drains is told so as it starts: its
    very first /readyz says 503, not 200 until the supervisor's 'drain' message reaches it."""
    child = site.serve_file(DRAINED_SITE, workers=1)
    [old] = site.wait_for_workers(1)
    os.kill(child.pid, signal.SIGTERM)
    child.expect("SIGTERM: draining")
    os.kill(old, signal.SIGKILL)
    answers = []  # every answer from the replacement, from its first on, while the drain lasts
    deadline = time.monotonic() + DEADLINE
    while len(answers) < 20 and time.monotonic() < deadline:
        try:
            answers.append(site.get("/readyz")[0])
        except OSError:
            continue  # no worker yet: the listening socket holds the connection until one accepts
    assert answers == [503] * 20
    assert child.wait() == 0

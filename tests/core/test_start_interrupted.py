"""Issue #11 item 1, in the core: exit() or restart() asked for while the bus is STARTING wins.

The start is finished (the listener running returns) or abandoned (the listeners after it do
not run), then the bus exits; it is never STARTED after EXITING, on any thread.
"""

from __future__ import annotations

import threading

import pytest
from support import DEADLINE

from wspbus._core.bus import Bus, states


def _wait_until(condition) -> None:
    event = threading.Event()
    for _ in range(int(DEADLINE * 1000)):
        if condition():
            return
        event.wait(0.001)  # test side only
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("request_exit", ["exit", "restart"])
def test_exit_asked_for_during_start_waits_for_it_then_exits_without_started(request_exit):
    bus = Bus(graceful_timeout=5)
    seen: list[str] = []
    bus.watch_state(lambda state: seen.append(state.name))
    in_start, go_on = threading.Event(), threading.Event()
    later_ran: list[bool] = []

    @bus.subscribe("start", priority=80)
    def slow() -> None:
        in_start.set()
        assert go_on.wait(DEADLINE)

    bus.subscribe("start", lambda: later_ran.append(True), priority=90)
    starting = threading.Thread(target=bus.start)
    starting.start()
    assert in_start.wait(DEADLINE)
    exiting = threading.Thread(target=getattr(bus, request_exit))
    exiting.start()
    _wait_until(lambda: bus.exit_begun)
    go_on.set()
    starting.join(DEADLINE)
    exiting.join(DEADLINE)
    assert not starting.is_alive() and not exiting.is_alive()
    assert bus.state is states.EXITING
    assert later_ran == []  # the rest of the start was abandoned
    assert seen == ["STARTING", "STOPPING", "STOPPED", "EXITING"]
    assert bus.execv == (request_exit == "restart")


def test_exit_from_a_start_listener_ends_the_start_on_that_thread():
    bus = Bus(graceful_timeout=5)
    seen: list[str] = []
    bus.watch_state(lambda state: seen.append(state.name))
    bus.subscribe("start", bus.exit, priority=80)
    bus.start()
    assert seen == ["STARTING", "STOPPING", "STOPPED", "EXITING"]

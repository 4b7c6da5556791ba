"""Bounding the end: listeners run on a worker the caller can stop waiting for, threads joined
against one deadline, and names for what hung."""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time
from collections.abc import Callable

from .waking import new_waker, wait_for

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: import wspbus stays cheap
if TYPE_CHECKING:
    from typing import Any

    Listener = Callable[..., Any]


Report = Callable[[int, "BaseException | None"], None]


def run_bounded(listeners: tuple[Listener, ...], channel: str, timeout: float,
                failed: Callable[[Listener, BaseException], None], log: Callable[..., None]) -> None:
    """Call ``listeners`` in order, each bounded by ``timeout`` seconds.

    They run on a daemon worker, so the caller can stop waiting. A listener that overruns is
    named through ``log`` and abandoned on its worker; a fresh worker runs the listeners after
    it. ``failed(listener, exception)`` is called, on the calling thread, for each that raised.
    """
    index = 0
    with contextlib.closing(new_waker()) as waker:
        while index < len(listeners):
            # One queue per worker: an abandoned worker's late report lands in a queue nobody reads.
            reports: collections.deque[tuple[int, BaseException | None]] = collections.deque()

            def report(done: int, outcome: BaseException | None,
                       reports: collections.deque[tuple[int, BaseException | None]] = reports) -> None:
                reports.append((done, outcome))
                waker.set()

            abandoned = start_listener_worker(listeners, index, "wspbus %s" % channel, report)
            while index < len(listeners):
                if not wait_for(waker, lambda: bool(reports), timeout):
                    abandoned.set()  # if the stuck listener ever returns, its worker stops there
                    log("Listener %s on channel %r did not return within %g s; going on without it"
                        % (describe(listeners[index]), channel, timeout), level=40)
                    index += 1
                    break
                done, outcome = reports.popleft()
                index = done + 1
                if outcome is not None:
                    failed(listeners[done], outcome)


def start_listener_worker(listeners: tuple[Listener, ...], first: int, name: str,
                          report: Report) -> threading.Event:
    """Run ``listeners[first:]`` in order on a daemon thread, reporting after each one.

    ``report(index, None)`` follows a listener that returned, ``report(index, exception)`` one
    that raised; KeyboardInterrupt and SystemExit end the run. Set the returned event to abandon
    the worker: it runs no further listener (another worker has taken over the rest).
    """
    abandoned = threading.Event()
    worker = threading.Thread(target=_run_listeners, args=(listeners, first, report, abandoned),
                              name=name, daemon=True)
    worker.start()
    return abandoned


def _run_listeners(listeners: tuple[Listener, ...], first: int, report: Report,
                   abandoned: threading.Event) -> None:
    for index in range(first, len(listeners)):
        if abandoned.is_set():
            return
        try:
            listeners[index]()
        except BaseException as exc:  # reported to the publishing thread, which decides
            report(index, exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                return
        else:
            report(index, None)


def join_threads(timeout: float | None, log: Callable[..., None]) -> list[threading.Thread]:
    """Join the other non-daemon threads within ``timeout`` in all; name those still alive in
    the log and return them."""
    deadline = None if timeout is None else time.monotonic() + timeout
    current = threading.current_thread()
    stuck: list[threading.Thread] = []
    for thread in threading.enumerate():
        if thread is current or thread.daemon or thread is threading.main_thread():
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        thread.join(remaining)
        if thread.is_alive():
            stuck.append(thread)
    if stuck:
        log("Threads still running after %g s, not waited for: %s"
            % (timeout or 0.0, ", ".join(t.name for t in stuck)), level=30)
    return stuck


def describe(listener: Listener) -> str:
    """A listener's name as a person would look for it: qualified name and owner."""
    name = getattr(listener, "__qualname__", None) or repr(listener)
    owner = getattr(listener, "__self__", None)
    if owner is not None and not isinstance(owner, type(sys)):
        return "%s of %r" % (name, owner)
    module = getattr(listener, "__module__", None)
    return "%s.%s" % (module, name) if module else name

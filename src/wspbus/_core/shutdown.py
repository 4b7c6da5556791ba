"""Bounding the end: listeners run on a worker the caller can stop waiting for, threads joined
against one deadline, and names for what hung."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Listener = Callable[..., Any]


Report = Callable[[int, "BaseException | None"], None]


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


def join_threads(timeout: float | None) -> list[threading.Thread]:
    """Join the other non-daemon threads within ``timeout`` in all; return those still alive."""
    deadline = None if timeout is None else time.monotonic() + timeout
    current = threading.current_thread()
    stuck = []
    for thread in threading.enumerate():
        if thread is current or thread.daemon or thread is threading.main_thread():
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        thread.join(remaining)
        if thread.is_alive():
            stuck.append(thread)
    return stuck


def describe(listener: Listener) -> str:
    """A listener's name as a person would look for it: qualified name and owner."""
    name = getattr(listener, "__qualname__", None) or repr(listener)
    owner = getattr(listener, "__self__", None)
    if owner is not None and not isinstance(owner, type(sys)):
        return "%s of %r" % (name, owner)
    module = getattr(listener, "__module__", None)
    return "%s.%s" % (module, name) if module else name

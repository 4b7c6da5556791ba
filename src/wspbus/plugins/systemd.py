"""Tell systemd how the site is doing: the sd_notify protocol, stdlib only.

The protocol is one datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET (a path,
or an abstract name written '@name'), each a few ``KEY=value`` lines. Without $NOTIFY_SOCKET the
plugin does nothing, so the same site runs unchanged outside systemd.

What is sent, and when:

* ``READY=1`` once the bus is STARTED; servers bind at priority 75 in 'start', so every server
  listens by then. With ``STATUS=`` naming the state and the binds, and ``MAINPID=`` this
  process: a daemon (``--daemon``) is not the process systemd started, and this makes it the
  service's main process (with ``NotifyAccess=all``) before its launcher exits. From the
  process systemd started, it changes nothing.
* ``RELOADING=1`` + ``MONOTONIC_USEC=`` when a restart (re-exec) or a graceful reload begins, and
  ``READY=1`` again when it is over: the re-executed process keeps the pid, so its own READY=1
  completes the reload. This is the contract of ``Type=notify-reload``.
* ``STOPPING=1`` when the bus begins to exit, or the site begins draining.
* ``WATCHDOG=1`` every $WATCHDOG_USEC / 2 while the site is healthy (STARTED, the 'health'
  checks pass and the optional ``healthy`` callable agrees), when $WATCHDOG_PID is unset or is
  our pid. A hung or broken site stops pinging and systemd restarts it.

The environment is left as it is (unlike ``sd_notify(unset_environment=1)``): a restart re-executes
the same process, same pid, which must find $NOTIFY_SOCKET again. Other processes the site spawns
inherit it too; systemd's default ``NotifyAccess=main`` ignores what they would send.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable

from .._core.bus import Bus, State
from .health import DRAIN_CHANNEL, checks_pass
from .base import SimplePlugin, declare_channel, restart_requested, watch_state

__all__ = ["SystemdNotifier", "notify", "notify_address"]

Binds = Callable[[], Iterable[object]] | Iterable[object] | None


def notify_address(value: str) -> str | bytes:
    """The socket address for a $NOTIFY_SOCKET value: a path, or '@name' for an abstract name."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError("NOTIFY_SOCKET=%r: expected an absolute socket path or an abstract '@name'" % value)


def notify(message: str, address: str | bytes | None = None) -> bool:
    """Send one sd_notify ``message``; False (nothing sent) when there is no service manager."""
    if address is None:
        value = os.environ.get("NOTIFY_SOCKET")
        if not value:
            return False
        address = notify_address(value)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)
    return True


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares reload times on."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def format_bind(bind: object) -> str:
    """'host:port' for a (host, port) tuple ('[v6]:port' for IPv6); anything else as str()."""
    if isinstance(bind, tuple) and len(bind) >= 2:
        host, port = bind[0], bind[1]
        return ("[%s]:%s" if ":" in str(host) else "%s:%s") % (host, port)
    return str(bind)


class SystemdNotifier(SimplePlugin):
    """Keep systemd informed of the bus's state: READY, RELOADING, STOPPING, STATUS, WATCHDOG.

    ``binds`` (a list, or a callable returning one, called when the text is needed) names what
    the site listens on, for ``STATUS=``: strings, or (host, port) tuples. ``healthy`` is an extra
    check the watchdog consults besides the bus's 'health' channel.
    """

    def __init__(self, bus: Bus, *, binds: Binds = None, healthy: Callable[[], bool] | None = None) -> None:
        super().__init__(bus)
        if healthy is not None and not callable(healthy):
            raise ValueError("healthy=%r: expected a callable returning True while the site is healthy" % (healthy,))
        if binds is not None and not callable(binds) and (isinstance(binds, (str, bytes)) or not _iterable(binds)):
            raise ValueError("binds=%r: expected a list of addresses, or a callable returning one" % (binds,))
        self.binds = binds
        self.healthy = healthy
        self.address: str | bytes | None = None
        self.watchdog_interval: float | None = None
        self._unwatch: Callable[[], None] | None = None
        self._watchdog_stop: threading.Event | None = None
        self._reloading = False
        self._send_failed = False
        self._read_environment()

    # -- configuration -------------------------------------------------------------------

    def _read_environment(self) -> None:
        value = os.environ.get("NOTIFY_SOCKET")
        if not value:
            return
        try:
            self.address = notify_address(value)
        except ValueError as exc:
            self.bus.log("systemd notification disabled: %s" % exc, level=30)
            return
        self.watchdog_interval = _watchdog_interval(self.bus)

    @property
    def enabled(self) -> bool:
        """True when a service manager listens ($NOTIFY_SOCKET is set and valid)."""
        return self.address is not None

    # -- bus wiring ----------------------------------------------------------------------

    def subscribe(self) -> None:
        """Follow the bus's states; nothing at all when systemd is not there."""
        if not self.enabled or self._unwatch is not None:
            return
        declare_channel(self.bus, DRAIN_CHANNEL)
        self._unwatch = watch_state(self.bus, self._state_changed)
        # Around the other 'graceful' listeners: first and last.
        self.bus.subscribe("graceful", self._reload_begins, priority=0)
        self.bus.subscribe("graceful", self._reload_done, priority=100)
        self.bus.subscribe(DRAIN_CHANNEL, self._drain_begins)

    def unsubscribe(self) -> None:
        if self._unwatch is None:
            return
        self._unwatch()
        self._unwatch = None
        self.bus.unsubscribe("graceful", self._reload_begins)
        self.bus.unsubscribe("graceful", self._reload_done)
        self.bus.unsubscribe(DRAIN_CHANNEL, self._drain_begins)
        self._stop_watchdog()

    # -- messages ------------------------------------------------------------------------

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` fields in one datagram; failures are logged, never raised."""
        if self.address is None:
            return False
        message = "".join("%s=%s\n" % item for item in fields.items())
        try:
            notify(message, self.address)
        except OSError as exc:
            if not self._send_failed:  # once: a vanished manager must not flood the log
                self._send_failed = True
                self.bus.log("systemd notification failed (%s); going on without it" % exc, level=30)
            return False
        return True

    def status_text(self, state: State) -> str:
        """The state's name; once STARTED, what the site listens on too."""
        if state is not self.bus.states.STARTED:
            return state.name
        binds = self.binds() if callable(self.binds) else self.binds
        names = ", ".join(format_bind(bind) for bind in binds or ())
        return "%s; listening on %s" % (state.name, names) if names else state.name

    def _state_changed(self, state: State) -> None:
        """Watcher: runs in the thread that changed the state, must be quick and never raise."""
        try:
            if state is self.bus.states.STARTED:
                self._reloading = False
                self.send(READY=1, MAINPID=os.getpid(), STATUS=self.status_text(state))
                self._start_watchdog()
            elif state is self.bus.states.STOPPING and restart_requested(self.bus):
                self._reload_begins()
            elif state is self.bus.states.STOPPING and getattr(self.bus, "exit_begun", False):
                self.send(STOPPING=1, STATUS=self.status_text(state))
            elif state is self.bus.states.EXITING:
                self._stop_watchdog()
                if not restart_requested(self.bus):
                    self.send(STATUS=self.status_text(state))
            elif not self._reloading:
                self.send(STATUS=self.status_text(state))
        except Exception as exc:  # a state change must not fail because of a notification
            self.bus.log("systemd notification failed: %r" % exc, level=30)

    def _reload_begins(self) -> None:
        self._reloading = True
        self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="Reloading")

    def _reload_done(self) -> None:
        self._reloading = False
        self.send(READY=1, STATUS=self.status_text(self.bus.state))

    def _drain_begins(self) -> None:
        self.send(STOPPING=1, STATUS="Draining: not ready, exiting after the drain delay")

    # -- watchdog ------------------------------------------------------------------------

    def is_healthy(self) -> bool:
        """What the watchdog pings for: STARTED, the 'health' checks pass, ``healthy()`` agrees."""
        if self.bus.state is not self.bus.states.STARTED or not checks_pass(self.bus):
            return False
        return self.healthy is None or bool(self.healthy())

    def _start_watchdog(self) -> None:
        interval = self.watchdog_interval
        if interval is None or self._watchdog_stop is not None:
            return
        self._watchdog_stop = threading.Event()
        threading.Thread(
            target=self._ping_while_healthy, args=(self._watchdog_stop, interval), name="wspbus systemd watchdog",
            daemon=True,
        ).start()

    def _stop_watchdog(self) -> None:
        if self._watchdog_stop is not None:
            self._watchdog_stop.set()
            self._watchdog_stop = None

    def _ping_while_healthy(self, stop: threading.Event, interval: float) -> None:
        """Ping on a fixed schedule (no drift, no catch-up burst); wake only to ping or to stop."""
        due = time.monotonic() + interval
        while not stop.wait(max(0.0, due - time.monotonic())):
            try:
                if self.is_healthy():
                    self.send(WATCHDOG=1)
            except Exception:
                self.bus.log("systemd watchdog health check failed", level=40, traceback=True)
            due += interval
            now = time.monotonic()
            if due <= now:
                due = now + interval


def _watchdog_interval(bus: Bus) -> float | None:
    """Half of $WATCHDOG_USEC in seconds, or None when the watchdog is off or not ours."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # meant for another process (the one that forked us, say)
    try:
        value = int(usec)
        if value <= 0:
            raise ValueError
    except ValueError:
        bus.log("systemd watchdog disabled: WATCHDOG_USEC=%r: expected a positive number of microseconds" % usec, level=30)
        return None
    return value / 2e6


def _iterable(value: object) -> bool:
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True

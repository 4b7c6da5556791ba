"""SystemdNotifier against a real datagram socket standing in for systemd.

The stand-in binds the notify socket (a path, or an abstract name), asks the kernel for each
sender's credentials (SO_PASSCRED, as systemd does) and records every message with the time it
arrived (CLOCK_MONOTONIC, the clock of MONOTONIC_USEC) and the pid that sent it.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import http_get
from wspbus import Bus
from wspbus.plugins.systemd import SystemdNotifier, notify

DEADLINE = 15.0
_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_STOP = b"STOP-RECORDING"


@dataclass
class Message:
    at: float  # time.monotonic() on arrival
    pid: int
    fields: dict

    def __contains__(self, key):
        return key in self.fields


class FakeSystemd:
    """Records every sd_notify datagram sent to ``value`` ('/path' or '@abstract')."""

    def __init__(self, value: str):
        self.value = value
        self.address = b"\0" + value[1:].encode() if value.startswith("@") else value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.address)
        self.received: queue.SimpleQueue = queue.SimpleQueue()
        self.log: list[Message] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CREDENTIALS.size))
            arrived = time.monotonic()
            if data == _STOP:
                return
            pid = -1
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDENTIALS.unpack(payload[: _CREDENTIALS.size])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.received.put(Message(arrived, pid, fields))

    def expect(self, key: str, timeout: float = DEADLINE) -> Message:
        """The next message carrying ``key``; every message read on the way is kept in ``log``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.received.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no %s within %gs; got %s" % (key, timeout, [m.fields for m in self.log])) from None
            self.log.append(message)
            if key in message:
                return message

    def collect(self, seconds: float) -> list[Message]:
        """Every message arriving in the next ``seconds`` (for asserting that one does not come)."""
        end = time.monotonic() + seconds
        got = []
        while (left := end - time.monotonic()) > 0:
            try:
                got.append(self.received.get(timeout=left))
            except queue.Empty:
                break
        self.log.extend(got)
        return got

    def close(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke:
            poke.sendto(_STOP, self.address)
        self._reader.join(DEADLINE)
        self.sock.close()


@pytest.fixture
def short_dir():
    """A directory whose path fits in sockaddr_un (tmp_path may be too long)."""
    path = tempfile.mkdtemp(prefix="sd-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def systemd(request, short_dir):
    value = os.path.join(short_dir, "notify") if request.param == "path" else "@wspbus-test-%s" % uuid.uuid4().hex
    fake = FakeSystemd(value)
    yield fake
    fake.close()


@pytest.fixture
def path_systemd(short_dir):
    fake = FakeSystemd(os.path.join(short_dir, "notify"))
    yield fake
    fake.close()


SITE = """
import os, sys, threading
from wspbus import Bus
from wspbus.plugins.signals import SignalHandler
from wspbus.plugins.systemd import SystemdNotifier, notify

bus = Bus(graceful_timeout=10)
SignalHandler(bus).subscribe()
unhealthy = threading.Event()
SystemdNotifier(bus, binds=lambda: [("127.0.0.1", 8080), ("::1", 8080), "unix:/run/site.sock"],
                healthy=lambda: not unhealthy.is_set()).subscribe()
# Markers sent by 'start' listeners: a server binding (75) and whatever runs last (100).
bus.subscribe("start", lambda: notify("X_SERVER_BOUND=1"), priority=75)
bus.subscribe("start", lambda: notify("X_LAST_START_LISTENER=1"), priority=100)
incarnation = int(os.environ.get("INCARNATION", "1"))
os.environ["INCARNATION"] = str(incarnation + 1)  # what a restart will see

def commands():
    for line in sys.stdin:
        command = line.strip()
        if command == "graceful":
            bus.graceful()
        elif command in ("unhealthy", "healthy"):
            (unhealthy.set if command == "unhealthy" else unhealthy.clear)()
        print("did", command, flush=True)

threading.Thread(target=commands, daemon=True).start()
bus.start()
print("incarnation", incarnation, "started", flush=True)
bus.block()
"""


@pytest.fixture
def site(spawn, request):
    """Start SITE with the environment given; close its stdin at the end."""
    children = []

    def start(**env):
        child = spawn(SITE, env=env, stdin=subprocess.PIPE)
        children.append(child)
        return child

    yield start
    for child in children:
        child.proc.stdin.close()


def tell(child, command):
    child.proc.stdin.write(command + "\n")
    child.proc.stdin.flush()
    child.expect("did %s" % command)


def test_ready_after_every_start_listener_then_stopping_on_sigterm(systemd, site):
    child = site(NOTIFY_SOCKET=systemd.value)
    ready = systemd.expect("READY")
    kinds = [next(iter(m.fields)) for m in systemd.log]
    # STATUS=STARTING first, the server bound, the last start listener done, then READY.
    assert kinds == ["STATUS", "X_SERVER_BOUND", "X_LAST_START_LISTENER", "READY"]
    assert systemd.log[0].fields["STATUS"] == "STARTING"
    assert ready.fields["READY"] == "1"
    assert ready.fields["STATUS"] == "STARTED; listening on 127.0.0.1:8080, [::1]:8080, unix:/run/site.sock"
    assert ready.pid == child.pid  # the kernel's word for the sender: the main process itself
    assert ready.fields["MAINPID"] == str(child.pid)  # a no-op here; a daemon becomes the main process by it
    child.expect("incarnation 1 started")

    child.send(signal.SIGTERM)
    stopping = systemd.expect("STOPPING")
    assert stopping.fields == {"STOPPING": "1", "STATUS": "STOPPING"}
    assert child.wait() == 0
    assert not any("READY" in m or "RELOADING" in m for m in systemd.log[len(kinds):])


def test_sighup_restart_is_a_notify_reload_and_graceful_too(path_systemd, site):
    systemd = path_systemd
    child = site(NOTIFY_SOCKET=systemd.value)
    first_ready = systemd.expect("READY")
    child.expect("incarnation 1 started")

    sent_at = time.monotonic()
    child.send(signal.SIGHUP)  # what Type=notify-reload sends for `systemctl reload`
    reloading = systemd.expect("RELOADING")
    second_ready = systemd.expect("READY")
    child.expect("incarnation 2 started")
    assert reloading.fields["RELOADING"] == "1"
    usec = int(reloading.fields["MONOTONIC_USEC"])
    # Generated after the reload was asked for, before it reached the socket: CLOCK_MONOTONIC.
    assert sent_at * 1e6 <= usec <= reloading.at * 1e6
    assert first_ready.pid == reloading.pid == second_ready.pid == child.pid  # same main pid
    between = systemd.log[systemd.log.index(reloading): systemd.log.index(second_ready)]
    assert not any("STOPPING" in m for m in between)  # a reload is not a stop

    tell(child, "graceful")
    graceful_reloading = systemd.expect("RELOADING")
    graceful_ready = systemd.expect("READY")
    assert graceful_ready.at >= graceful_reloading.at
    assert int(graceful_reloading.fields["MONOTONIC_USEC"]) > usec

    child.send(signal.SIGTERM)
    systemd.expect("STOPPING")
    assert child.wait() == 0


def test_watchdog_pings_at_half_the_timeout_only_while_healthy(path_systemd, site):
    systemd = path_systemd
    interval = 0.2
    child = site(NOTIFY_SOCKET=systemd.value, WATCHDOG_USEC=str(int(interval * 2e6)))
    ready = systemd.expect("READY")
    pings = [systemd.expect("WATCHDOG") for _ in range(7)]
    times = [ready.at] + [p.at for p in pings]
    gaps = [b - a for a, b in zip(times[1:], times[2:])]
    print("watchdog intervals (s):", ", ".join("%.4f" % g for g in gaps))
    assert all(interval * 0.75 <= gap <= interval * 1.75 for gap in gaps), gaps
    assert interval * 0.9 <= statistics.mean(gaps) <= interval * 1.2, gaps
    assert all(p.fields["WATCHDOG"] == "1" and p.pid == child.pid for p in pings)

    tell(child, "unhealthy")
    quiet = [m for m in systemd.collect(interval * 4) if "WATCHDOG" in m]
    assert len(quiet) <= 1, "pinged %d times while unhealthy" % len(quiet)  # one may have been under way
    tell(child, "healthy")
    systemd.expect("WATCHDOG", timeout=interval * 3)


def _in_process(monkeypatch, systemd, **env):
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.value)
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bus = Bus(graceful_timeout=5)
    notifier = SystemdNotifier(bus)
    notifier.subscribe()
    return bus, notifier


def test_watchdog_pid_of_another_process_means_no_pings(monkeypatch, path_systemd):
    bus, notifier = _in_process(monkeypatch, path_systemd, WATCHDOG_USEC="100000", WATCHDOG_PID=str(os.getppid()))
    assert notifier.watchdog_interval is None
    bus.start()
    path_systemd.expect("READY")
    assert not [m for m in path_systemd.collect(0.3) if "WATCHDOG" in m]  # 6 intervals of 50 ms
    bus.exit()


def test_watchdog_pid_equal_to_ours_pings(monkeypatch, path_systemd):
    bus, notifier = _in_process(monkeypatch, path_systemd, WATCHDOG_USEC="100000", WATCHDOG_PID=str(os.getpid()))
    assert notifier.watchdog_interval == 0.05
    bus.start()
    assert path_systemd.expect("WATCHDOG", timeout=2).pid == os.getpid()
    bus.exit()


def test_watchdog_thread_stops_at_once_on_exit(monkeypatch, path_systemd):
    bus, _ = _in_process(monkeypatch, path_systemd, WATCHDOG_USEC="60000000")  # a ping every 30 s
    bus.start()
    path_systemd.expect("READY")
    [watchdog] = [t for t in threading.enumerate() if t.name == "wspbus systemd watchdog"]
    begun = time.monotonic()
    bus.exit()
    watchdog.join(DEADLINE)
    assert not watchdog.is_alive() and time.monotonic() - begun < 1.0


def test_without_notify_socket_nothing_happens(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    bus = Bus(graceful_timeout=5)
    notifier = SystemdNotifier(bus)
    notifier.subscribe()
    assert not notifier.enabled and notify("READY=1") is False
    bus.start()
    assert not [t for t in threading.enumerate() if t.name == "wspbus systemd watchdog"]
    bus.exit()


def test_bad_notify_socket_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "run/notify")
    bus = Bus(graceful_timeout=5)
    logged = []
    bus.subscribe("log", lambda msg, level=20: logged.append((level, msg)))
    assert not SystemdNotifier(bus).enabled
    assert logged == [(30, "systemd notification disabled: NOTIFY_SOCKET='run/notify': "
                           "expected an absolute socket path or an abstract '@name'")]


def test_a_vanished_manager_is_logged_once_and_never_fails_the_bus(monkeypatch, short_dir):
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(short_dir, "nobody-listens"))
    bus = Bus(graceful_timeout=5)
    logged = []
    bus.subscribe("log", lambda msg, level=20: logged.append((level, msg)))
    SystemdNotifier(bus).subscribe()
    bus.start()
    bus.graceful()
    bus.exit()
    failures = [msg for level, msg in logged if level == 30]
    assert len(failures) == 1 and failures[0].startswith("systemd notification failed")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"healthy": True}, "healthy=True: expected a callable returning True while the site is healthy"),
        ({"binds": "127.0.0.1:80"}, "binds='127.0.0.1:80': expected a list of addresses, or a callable returning one"),
        ({"binds": 8080}, "binds=8080: expected a list of addresses, or a callable returning one"),
    ],
)
def test_bad_arguments_are_one_clear_line(kwargs, message):
    with pytest.raises(ValueError) as caught:
        SystemdNotifier(Bus(), **kwargs)
    assert str(caught.value) == message


# -- examples/systemd: the unit files and the site they run, under a launcher doing what systemd does

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "systemd"

# Opens the listening socket, passes it as descriptor 3 with LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID
# (sd_listen_fds(3)) and execs `wspbus serve` in its own process, as systemd does for the units.
LAUNCHER = """
import os, socket, sys
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(64)
print("port", sock.getsockname()[1], flush=True)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
    sock.close()
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES=sys.argv[2], LISTEN_PID=str(os.getpid()))
os.execv(sys.executable, [sys.executable, "-m", "wspbus", "serve", "--config", sys.argv[1]])
"""


def unit_settings(path: Path) -> dict[str, str]:
    """Key=value lines of a unit file (the last one wins; comments and sections skipped)."""
    settings = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def test_example_units_agree_with_the_site():
    service = unit_settings(EXAMPLE / "wspbus-site.service")
    socket_unit = unit_settings(EXAMPLE / "wspbus-site.socket")
    site = tomllib.loads((EXAMPLE / "site.toml").read_text())
    assert service["Type"] == "notify-reload" and "ExecReload" not in service
    assert service["NotifyAccess"] == "main"
    assert "wspbus serve --config" in service["ExecStart"]
    assert int(service["TimeoutStopSec"]) > site["site"]["graceful_timeout"]
    assert int(service["WatchdogSec"]) > 0
    assert socket_unit["Service"] == "wspbus-site.service"
    assert site["server"][0]["bind"] == ["systemd:%s" % socket_unit["FileDescriptorName"]]
    assert "systemd" in site["plugins"]


def test_example_site_runs_as_systemd_would_run_it(spawn, path_systemd, tmp_path):
    systemd = path_systemd
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    socket_name = unit_settings(EXAMPLE / "wspbus-site.socket")["FileDescriptorName"]
    child = spawn([sys.executable, str(launcher), str(EXAMPLE / "site.toml"), socket_name],
                  env={"NOTIFY_SOCKET": systemd.value, "WATCHDOG_USEC": "1000000"})
    port = int(child.expect(r"port (\d+)").group(1))
    ready = systemd.expect("READY")
    assert ready.pid == child.pid
    assert ready.fields["STATUS"] == "STARTED; listening on http://127.0.0.1:%d" % port
    assert http_get("127.0.0.1", port, "/")[0] == 200  # served on the socket "systemd" passed
    assert systemd.expect("WATCHDOG").pid == child.pid

    child.send(signal.SIGHUP)  # systemctl reload
    assert systemd.expect("RELOADING").pid == child.pid
    assert systemd.expect("READY").pid == child.pid  # the re-executed site, same main pid
    assert http_get("127.0.0.1", port, "/")[0] == 200

    child.send(signal.SIGTERM)  # systemctl stop
    systemd.expect("STOPPING")
    assert child.wait() == 0

"""The supervisor's other duties: SIGTTIN/SIGTTOU scale the workers; systemd hears of the whole site."""

from __future__ import annotations

import os
import queue
import signal
import socket
import struct
import threading
import uuid

from supervised import wait_gone

from support import DEADLINE

_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid


def test_sigttin_adds_a_worker_and_sigttou_removes_one(site):
    child = site.serve(workers=1)
    first = site.worker_pids()
    child.send(signal.SIGTTIN)
    child.expect(r"SIGTTIN: 2 workers")
    both = site.wait_for_workers(2)
    child.send(signal.SIGTTOU)
    child.expect(r"SIGTTOU: 1 worker$")
    wait_gone([pid for pid in both if pid not in first])  # the newest slot goes
    assert site.worker_pids() == first
    child.send(signal.SIGTTOU)
    child.expect(r"SIGTTOU: keeping the last worker")
    assert site.worker_pids() == first


class NotifyRecorder:
    """A stand-in for systemd's notify socket: (sender pid, fields) of each datagram."""

    def __init__(self) -> None:
        self.value = "@wspbus-supervisor-%s" % uuid.uuid4().hex
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(b"\0" + self.value[1:].encode())
        self.messages: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data, ancdata, _flags, _address = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CREDENTIALS.size))
            except OSError:
                return  # closed
            pid = next((_CREDENTIALS.unpack(payload[:_CREDENTIALS.size])[0] for level, kind, payload in ancdata
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), -1)
            self.messages.put((pid, dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)))

    def expect(self, key: str) -> tuple[int, dict, list]:
        """The next message with ``key``: (pid, fields, the messages before it)."""
        before = []
        while True:
            pid, fields = self.messages.get(timeout=DEADLINE)
            if key in fields:
                return pid, fields, before
            before.append((pid, fields))


def test_systemd_hears_ready_once_every_worker_serves_and_reloading_during_a_reload(site):
    recorder = NotifyRecorder()
    site.env_extra = {"NOTIFY_SOCKET": recorder.value}
    child = site.serve(workers=2)
    pid, fields, _ = recorder.expect("READY")
    assert pid == child.pid and "listening on" in fields["STATUS"]
    assert len(site.worker_pids()) == 2
    site.write_app(version="v2")
    assert site.run("reload", "--pidfile", site.pidfile).returncode == 0
    pid, fields, _ = recorder.expect("RELOADING")
    assert pid == child.pid and "MONOTONIC_USEC" in fields
    pid, _, _ = recorder.expect("READY")
    assert pid == child.pid
    child.send(signal.SIGTERM)
    pid, _, before = recorder.expect("STOPPING")
    assert child.wait() == 0
    assert pid == child.pid and all(sender == child.pid for sender, _ in before)  # workers never notify
    recorder.sock.close()


def test_a_daemon_under_systemd_names_itself_the_main_process_as_it_says_ready(site):
    recorder = NotifyRecorder()
    site.env_extra = {"NOTIFY_SOCKET": recorder.value}
    launcher = site.run("serve", "--workers", "2", "--daemon", "--chdir", site.app_dir, "--pidfile", site.pidfile,
                        "--log-file", site.run_dir / "error.log", "-b", "127.0.0.1:0", "site_app:app")
    assert launcher.returncode == 0, launcher.stderr
    supervisor = int(site.pidfile.read_text())
    sender, fields, _ = recorder.expect("READY")
    # systemd started the launcher, which exits: MAINPID= makes the supervisor the service's main
    # process (NotifyAccess=all lets a process other than the main one say so).
    assert sender == supervisor and fields["MAINPID"] == str(supervisor)
    assert site.run("stop", "--pidfile", site.pidfile).returncode == 0
    pid, _, before = recorder.expect("STOPPING")
    assert pid == supervisor and all(sender == supervisor for sender, _ in before)  # workers never notify
    recorder.sock.close()


def test_the_watchdog_pings_only_while_a_worker_serves(site):
    recorder = NotifyRecorder()
    site.env_extra = {"NOTIFY_SOCKET": recorder.value, "WATCHDOG_USEC": "200000"}  # a ping every 0.1 s
    site.write_app(extra="""
        import wspbus
        wspbus.bus.subscribe("start", lambda: os.path.exists("broken") and 1 / 0)  # replacements fail while it exists
    """)
    child = site.serve(workers=1)
    recorder.expect("READY")
    assert recorder.expect("WATCHDOG")[0] == child.pid
    (site.app_dir / "broken").touch()
    os.kill(site.worker_pids()[0], signal.SIGKILL)
    child.expect(r"A replacement worker for slot 0 could not start")
    _drain(recorder)
    assert not [fields for _, fields in _collect(recorder, 0.5) if "WATCHDOG" in fields]  # no worker: no pings
    (site.app_dir / "broken").unlink()
    child.expect(r"replaces the worker of slot 0", timeout=DEADLINE + 5)
    assert recorder.expect("WATCHDOG")[0] == child.pid  # pings again


def _drain(recorder: NotifyRecorder) -> None:
    """Forget what was sent before now (a ping may have been on its way)."""
    _collect(recorder, 0.15)


def _collect(recorder: NotifyRecorder, seconds: float) -> list:
    import time

    got, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            got.append(recorder.messages.get(timeout=left))
        except queue.Empty:
            break
    return got

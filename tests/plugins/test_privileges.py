"""DropPrivileges for real: a child binds a privileged port as root, then runs as ``nobody``."""

from __future__ import annotations

import json
import os
import pwd
import socket

import pytest

from wspbus import Bus
from wspbus.plugins.privileges import DropPrivileges

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")

CHILD = """\
    import json, os, socket, sys, threading
    from wspbus import Bus, ChannelFailures
    from wspbus.plugins.privileges import DropPrivileges

    root_only = sys.argv[1]
    bus = Bus(graceful_timeout=10)
    bus.subscribe("log", lambda msg, level=20: print("LOG", msg, flush=True))
    listening = []

    def bind_privileged_port():  # as a server does, at priority 75
        for port in range(1000, 1024):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sock.listen()
            listening.append(sock)
            with open(root_only, "a") as f:
                f.write("written as root\\n")
            return
        raise RuntimeError("no free port in 1000-1023")

    def ids():
        umask = os.umask(0); os.umask(umask)
        return dict(uids=os.getresuid(), gids=os.getresgid(), groups=os.getgroups(), umask=umask)

    def serve_one():
        conn, _ = listening[0].accept()
        with conn:
            conn.sendall(json.dumps(ids()).encode())

    bus.subscribe("start", bind_privileged_port, priority=75)
    DropPrivileges(bus, umask=0o027, uid="nobody").subscribe()
    bus.start()
    try:
        open(root_only, "a").close()
        print("root-only file: written")
    except PermissionError:
        print("root-only file: refused")
    try:
        os.setuid(0)
        print("setuid(0): worked")
    except PermissionError:
        print("setuid(0): refused")
    server = threading.Thread(target=serve_one)
    server.start()
    print("serving on", listening[0].getsockname()[1], flush=True)
    server.join()
    listening[0].close()
    bus.exit()
    """


def test_binds_as_root_then_serves_as_nobody(spawn, tmp_path):
    nobody = pwd.getpwnam("nobody")
    root_only = tmp_path / "root-only"
    root_only.touch(mode=0o600)
    child = spawn(CHILD, str(root_only))
    port = int(child.expect(r"^serving on (\d+)$").group(1))
    assert port < 1024
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
    facts = json.loads(reply)  # from the thread serving the socket bound as root
    assert facts["uids"] == [nobody.pw_uid] * 3
    assert facts["gids"] == [nobody.pw_gid] * 3  # the user's primary group, not root's
    assert sorted(facts["groups"]) == sorted(os.getgrouplist("nobody", nobody.pw_gid))
    assert 0 not in facts["groups"]
    assert facts["umask"] == 0o027
    assert child.wait() == 0
    output = child.output()
    assert "root-only file: refused" in output and "setuid(0): refused" in output
    assert root_only.read_text() == "written as root\n"  # it could, before the drop
    assert "LOG umask old: 022, new: 027" in output


def test_a_process_that_is_not_root_cannot_switch_and_says_so(spawn):
    child = spawn("""\
        import logging, os  # imported while root: this interpreter lives under /root (mode 0700)
        from wspbus import Bus, ChannelFailures
        from wspbus.plugins.privileges import DropPrivileges

        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        bus = Bus(graceful_timeout=10)
        DropPrivileges(bus, uid="daemon").subscribe()
        try:
            bus.start()
        except ChannelFailures as failures:
            print("start failed:", *failures.get_instances())
            raise SystemExit(bus.exit_code or 1)
        """)
    assert child.wait() == 1
    daemon = pwd.getpwnam("daemon")
    assert ("start failed: DropPrivileges: cannot switch to uid %d gid %d: Operation not permitted "
            "(only root can; this process runs as uid 65534)" % (daemon.pw_uid, daemon.pw_gid)) in child.output()


def test_names_are_resolved_and_unknown_ones_are_a_clear_error():
    bus = Bus(graceful_timeout=10)
    plugin = DropPrivileges(bus, uid="nobody", gid="nogroup")
    assert (plugin.uid, plugin.gid) == (pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
    with pytest.raises(ValueError, match=r"^DropPrivileges: no such user 'no-such-user-wspbus' "
                                         r"\(expected a user name or a uid number\)$"):
        DropPrivileges(bus, uid="no-such-user-wspbus")
    with pytest.raises(ValueError, match=r"^DropPrivileges: no such group 'no-such-group-wspbus'"):
        DropPrivileges(bus, gid="no-such-group-wspbus")
    with pytest.raises(ValueError, match=r"^DropPrivileges: umask must be a number from 0 to 0o777"):
        DropPrivileges(bus, umask=0o1777)
    assert DropPrivileges.start.priority == 77

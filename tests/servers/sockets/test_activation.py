"""Socket activation with a real launcher: it binds, sets LISTEN_* as systemd does, and execs the site."""

from __future__ import annotations

import sys

import pytest

from serving import get
from support import ACTIVATING_LAUNCHER

SITE = r'''
import os, sys, threading
from wspbus import Bus
from wspbus.servers import HTTPServer

def app(environ, start_response):
    if environ["PATH_INFO"] == "/exit":  # a request, not a signal: nothing can lose it
        threading.Thread(target=bus.exit).start()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"activated %d" % os.getpid()]

bus = Bus(graceful_timeout=5)
plugin = HTTPServer(bus, app, sys.argv[1])
plugin.subscribe()
try:
    bus.start()
except Exception as exc:
    print("start failed:", exc.get_instances()[0], flush=True)
    sys.exit(bus.exit_code)
left = sorted(name for name in os.environ if name.startswith("LISTEN_"))
print("serving", plugin.address[1], "LISTEN variables left:", left, flush=True)
bus.block()
'''


@pytest.fixture
def site(tmp_path):
    path = tmp_path / "site.py"
    path.write_text(SITE)
    return str(path)


@pytest.mark.parametrize("protocol, bind", [("systemd", "systemd:web"), ("plain", "fd://3")])
def test_serves_on_the_socket_the_launcher_passed(spawn, site, protocol, bind):
    child = spawn(ACTIVATING_LAUNCHER, protocol, sys.executable, site, bind, name="launcher.py")
    port = int(child.expect(r"^launcher bound (\d+)$")[1])
    served = child.expect(r"^serving (\d+) LISTEN variables left: (.*)$")
    assert int(served[1]) == port  # it bound nothing itself
    assert served[2] == "[]"       # unset, so its own children do not take the sockets
    assert get(("127.0.0.1", port)) == (200, b"activated %d" % child.pid)
    get(("127.0.0.1", port), "/exit")
    assert child.wait() == 0


def test_wrong_socket_name_fails_start_naming_what_was_passed(spawn, site):
    child = spawn(ACTIVATING_LAUNCHER, "systemd", sys.executable, site, "systemd:api", name="launcher.py")
    child.expect(r"^start failed: cannot use systemd:api: the sockets passed to this process are named web$")
    assert child.wait() == 1


def test_variables_meant_for_another_process_are_ignored_and_unset(spawn):
    child = spawn(r'''
import os
from wspbus.servers import listen_fds
print("passed", listen_fds(), sorted(k for k in os.environ if k.startswith("LISTEN_")), flush=True)
''', env={"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "web"})
    child.expect(r"^passed \{\} \[\]$")
    assert child.wait() == 0


def test_fd_that_is_not_open_is_one_line(spawn, site):
    child = spawn([sys.executable, site, "fd://917"])
    child.expect(r"^start failed: cannot use fd://917: bad file descriptor$")
    assert child.wait() == 1

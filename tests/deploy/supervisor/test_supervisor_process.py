"""What a single process does keeps working with workers: daemon, privileges, autoreload, draining, systemd."""

from __future__ import annotations

import re
import signal
import time

import pytest

from serve_support import WSPBUS, ended
from supervised import KeepAliveClient, answered_by, tagged_pids, wait_gone

from support import ACTIVATING_LAUNCHER


def test_daemon_mode_returns_once_the_workers_serve_and_is_controlled_by_its_pid_file(site):
    log = site.run_dir / "error.log"
    launcher = site.run("serve", "--workers", "2", "--daemon", "--chdir", site.app_dir, "--pidfile", site.pidfile,
                        "--log-file", log, "-b", "127.0.0.1:0", "site_app:app")
    assert launcher.returncode == 0, launcher.stderr
    pid = int(site.pidfile.read_text())
    record = site.status()
    assert record["pid"] == pid and len(record["workers"]) == 2
    site.url = record["binds"][0]
    site.get_until("v1 ")
    site.write_app(version="v2")
    assert site.run("reload", "--pidfile", site.pidfile).returncode == 0
    site.get_until("v2 ")
    assert site.run("stop", "--pidfile", site.pidfile).returncode == 0
    assert ended(pid) and not tagged_pids(site.tag)
    text = log.read_text()
    assert re.search(r"INFO Serving %s$" % re.escape(site.url), text, re.M)  # the banner, logged
    assert re.search(r"INFO \[worker \d+\] Bus STARTED", text)


def test_a_daemon_whose_workers_cannot_start_tells_its_launcher(site):
    site.write_app(extra="raise RuntimeError('no database URL')")
    launcher = site.run("serve", "--workers", "1", "--daemon", "--chdir", site.app_dir, "--pidfile", site.pidfile,
                        "--log-file", site.run_dir / "error.log", "-b", "127.0.0.1:0", "site_app:app")
    assert launcher.returncode == 78
    assert "importing 'site_app' failed: RuntimeError: no database URL" in launcher.stderr
    wait_gone(tagged_pids(site.tag))  # the daemon ends right after it told its launcher


def test_workers_drop_privileges_after_importing_the_site_and_taking_their_sockets(site):
    site.serve("--user", "nobody", "--group", "nogroup", "--umask", "027", workers=2)
    assert site.get()[0] == 200
    for pid in site.worker_pids():
        with open("/proc/%d/status" % pid) as file:
            status = file.read()
        assert re.search(r"^Uid:\s+65534\s+65534\s+65534", status, re.M)
        assert re.search(r"^Gid:\s+65534\s+65534\s+65534", status, re.M)
        assert re.search(r"^Umask:\s+0027", status, re.M)


def test_autoreload_reloads_the_workers_with_overlap(site):
    child = site.serve("--reload", workers=2)
    child.expect(r"^wspbus: autoreload is on")
    with KeepAliveClient(site.url) as kept:
        kept.wait_for("v1")
        site.write_app(version="v2")
        kept.wait_for("v2")
        child.expect(r"Generation 2 serves")
        site.write_app(version="v3", extra="import no_such_module_xyz")
        child.expect(r"Reload failed: generation 3 could not start: .*no_such_module_xyz")
        site.write_app(version="v4")  # the next good save reloads again
        kept.wait_for("v4")
        child.expect(r"Generation 4 serves")  # one generation per save, not one per worker that saw it
    assert kept.failures == []


def test_a_drain_makes_every_worker_answer_not_ready(site):
    child = site.serve_file("""
        [[app]]
        target = "site_app:app"
        [plugins.health]
        [plugins.drain]
        drain_delay = 3
    """)
    assert site.get("/readyz")[0] == 200
    child.send(signal.SIGTERM)
    child.expect("draining")
    for _ in range(20):  # on new connections: both workers answer
        assert site.get("/readyz")[0] == 503
        assert site.get("/")[0] == 200
    assert child.wait() == 0


@pytest.mark.parametrize("binds", [["-b", "systemd:web"], []], ids=["named", "no-bind"])
def test_socket_activation_passes_the_activated_socket_to_every_worker(site, binds):
    child = site.spawn(ACTIVATING_LAUNCHER, "systemd", *WSPBUS, "serve", "--workers", "2", "--chdir", str(site.app_dir),
                       *binds, "site_app:app", name="launcher.py", env=site.env, cwd=site.app_dir)
    site.child = child
    port = int(child.expect(r"^launcher bound (\d+)$").group(1))
    site.url = child.expect(r"^wspbus: serving (\S+)$").group(1)
    assert site.url == "http://127.0.0.1:%d" % port  # with no bind: every passed socket, and nothing else
    assert len(answered_by(site, 2)) == 2  # both workers serve the activated socket

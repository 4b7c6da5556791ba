"""StatusFile: the status file a site keeps beside its pid file, for ``wspbus status``."""

from __future__ import annotations

import json
import os

import pytest

import wspbus
from wspbus.deploy.config import SiteConfig
from wspbus.deploy.launch import Deployment
from wspbus.deploy.site import Site, mount_app
from wspbus.plugins import status as status_plugin
from wspbus.plugins.pidfile import PIDFile
from wspbus.plugins.status import StatusFile, status_path


def read(path):
    with open(path) as file:
        return json.load(file)


def hello(environ, start_response):
    start_response("200 OK", [])
    return [b"hi"]


def test_status_file_sits_beside_the_pid_file():
    assert status_path("/run/site.pid") == "/run/site.status.json"
    assert status_path("/run/pidfile") == "/run/pidfile.status.json"


def test_the_status_file_follows_the_state_and_goes_away_on_exit(tmp_path, monkeypatch):
    monkeypatch.delenv(status_plugin.SINCE_ENV, raising=False)
    bus = wspbus.Bus()
    deployment = Deployment(bus, Site([mount_app("/", hello)]), SiteConfig(reload=True))
    pidfile = str(tmp_path / "site.pid")
    status = StatusFile(bus, pidfile, deployment)
    status.subscribe()
    seen = []
    bus.watch_state(lambda state: seen.append(read(status.path)["state"] if os.path.exists(status.path) else None))
    bus.subscribe("start", lambda: seen.append(read(status.path)["state"]), priority=72)
    bus.start()
    record = read(status.path)
    assert record["state"] == "STARTED" and record["pid"] == os.getpid()
    assert record["mounts"] == ["/ -> test_status:hello (wsgi)"] and record["reload"] is True
    assert record["since"] <= record["started"] <= record["updated"]
    assert seen == [None, "STARTING", "STARTED"]  # nothing before the pid file is claimed (priority 70)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]  # written by rename
    bus.exit()
    assert seen == [None, "STARTING", "STARTED", "STOPPING", "STOPPED", None]
    status.unsubscribe()


def site_with_status_file(pidfile):
    bus = wspbus.Bus()
    deployment = Deployment(bus, Site([mount_app("/", hello)]), SiteConfig())
    PIDFile(bus, pidfile).subscribe()
    status = StatusFile(bus, pidfile, deployment)
    status.subscribe()
    return bus, status


def test_a_second_instance_refused_by_the_pid_file_leaves_the_status_file_alone(tmp_path):
    pidfile = str(tmp_path / "site.pid")
    running, status = site_with_status_file(pidfile)
    running.start()
    before = read(status.path)
    second, _ = site_with_status_file(pidfile)  # another lock on the same file: refused like a second process
    with pytest.raises(wspbus.ChannelFailures, match="another instance is already running"):
        second.start()
    assert read(status.path) == before  # neither rewritten (STARTING, STOPPED) nor removed
    running.exit()
    assert not os.path.exists(status.path)


def test_a_status_file_recording_another_pid_is_not_removed(tmp_path):
    bus = wspbus.Bus()
    status = StatusFile(bus, str(tmp_path / "site.pid"), Deployment(bus, Site([mount_app("/", hello)]), SiteConfig()))
    status.subscribe()

    def taken_over(state):  # runs after the status file's own watcher wrote STOPPED
        if state.name == "STOPPED":
            with open(status.path, "w") as file:
                json.dump({"state": "STARTED", "pid": os.getppid()}, file)

    bus.watch_state(taken_over)
    bus.start()
    bus.exit()
    assert read(status.path)["pid"] == os.getppid()


def test_a_restart_is_recorded_and_the_first_start_time_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv(status_plugin.SINCE_ENV, raising=False)
    bus = wspbus.Bus()
    deployment = Deployment(bus, Site([mount_app("/", hello)]), SiteConfig())
    status = StatusFile(bus, str(tmp_path / "site.pid"), deployment)
    status.subscribe()
    bus.start()
    first = read(status.path)["since"]
    bus.execv = True  # what restart() sets; block() would then re-execute
    bus.exit()
    assert read(status.path)["state"] == "RESTARTING"
    assert os.environ[status_plugin.SINCE_ENV] == "%d:%r" % (os.getpid(), first)  # what the new process reads
    assert status_plugin.first_start() == first

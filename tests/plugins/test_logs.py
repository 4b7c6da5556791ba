"""LogRouter with real files, real renames (as logrotate does) and a real child process for stderr."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from wspbus.plugins.logs import LogRouter

DEADLINE = 15.0
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
CLF_LINE = '127.0.0.1 - - [01/May/2024:12:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8.0"'


@pytest.fixture
def router(bus):
    """Make and subscribe LogRouters; each is unsubscribed (files closed, loggers restored) after."""
    made: list[LogRouter] = []

    def make(**options) -> LogRouter:
        log_router = LogRouter(bus, **options)
        log_router.subscribe()
        made.append(log_router)
        return log_router

    yield make
    for log_router in made:
        log_router.unsubscribe()


@pytest.fixture
def access_logger():
    return logging.getLogger("wspbus.access")


class Collector(logging.Handler):
    """A handler an application might put on the root logger."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def root_collector():
    collector = Collector()
    root = logging.getLogger()
    root.addHandler(collector)
    yield collector
    root.removeHandler(collector)


def test_error_log_lines_are_timestamp_level_message(bus, router, tmp_path):
    error_log = tmp_path / "error.log"
    router(error_log=str(error_log))
    bus.log("disk almost full", level=30)
    [line] = [line for line in error_log.read_text().splitlines() if "disk" in line]
    assert re.fullmatch(TIMESTAMP + " WARNING disk almost full", line), line


def test_renamed_file_is_reopened_at_its_path_on_graceful(bus, router, tmp_path):
    error_log = tmp_path / "error.log"
    router(error_log=str(error_log))
    bus.log("before rotation")
    error_log.rename(tmp_path / "error.log.1")  # logrotate's move
    bus.graceful()
    bus.log("after rotation")
    rotated = (tmp_path / "error.log.1").read_text()
    fresh = error_log.read_text()
    assert "before rotation" in rotated and "after rotation" not in rotated
    assert "after rotation" in fresh and "before rotation" not in fresh


@pytest.mark.parametrize("channel", ["SIGUSR1", "SIGHUP"])
def test_files_are_reopened_on_the_signal_channel_given(bus, router, tmp_path, access_logger, channel):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    router(error_log=str(error_log), access_log=str(access_log), reopen_on=channel)
    error_log.rename(tmp_path / "error.log.1")
    access_log.rename(tmp_path / "access.log.1")
    bus.publish(channel)
    bus.log("after the signal")
    access_logger.info(CLF_LINE)
    assert "after the signal" in error_log.read_text()
    assert access_log.read_text() == CLF_LINE + "\n"
    assert (tmp_path / "access.log.1").read_text() == ""


def test_other_signal_channels_do_not_reopen(bus, router, tmp_path):
    error_log = tmp_path / "error.log"
    router(error_log=str(error_log), reopen_on="SIGHUP")
    error_log.rename(tmp_path / "error.log.1")
    bus.publish("SIGUSR1")
    bus.log("still the old file")
    assert not error_log.exists()
    assert "still the old file" in (tmp_path / "error.log.1").read_text()


def test_error_and_access_logs_are_separate_files(bus, router, tmp_path, access_logger):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    router(error_log=str(error_log), access_log=str(access_log), level=logging.WARNING)
    bus.log("an error", level=40)
    bus.log("chatter below the level", level=20)
    access_logger.info(CLF_LINE)  # INFO, below the error log's level, yet an access line
    assert access_log.read_text() == CLF_LINE + "\n"  # as the server formatted it
    errors = error_log.read_text()
    assert "an error" in errors
    assert CLF_LINE not in errors and "chatter" not in errors


def test_without_an_access_log_access_lines_reach_the_error_log(bus, router, tmp_path, access_logger):
    error_log = tmp_path / "error.log"
    router(error_log=str(error_log))
    access_logger.info(CLF_LINE)
    assert re.fullmatch(TIMESTAMP + " INFO " + re.escape(CLF_LINE) + "\n", error_log.read_text())


def test_lines_are_not_printed_twice_and_unsubscribe_restores(bus, tmp_path, root_collector):
    wspbus_logger = logging.getLogger("wspbus")
    wspbus_logger.setLevel(logging.DEBUG)
    try:
        error_log = tmp_path / "error.log"
        log_router = LogRouter(bus, error_log=str(error_log), level=logging.WARNING)
        log_router.subscribe()
        bus.log("routed once", level=40)
        log_router.unsubscribe()
        bus.log("after unsubscribe", level=40)
        assert error_log.read_text().count("routed once") == 1
        assert "routed once" not in root_collector.messages  # the root handler did not print it
        assert "after unsubscribe" not in error_log.read_text()
        assert "after unsubscribe" in root_collector.messages  # propagation is back
        assert wspbus_logger.level == logging.DEBUG and wspbus_logger.propagate
        assert not wspbus_logger.handlers
        assert "graceful" in bus.listeners and not bus.listeners["SIGUSR1"]
    finally:
        wspbus_logger.setLevel(logging.NOTSET)


def test_relative_paths_are_fixed_when_the_router_is_made(bus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log_router = LogRouter(bus, error_log="relative.log")
    monkeypatch.chdir("/")  # as a daemon does
    log_router.subscribe()
    try:
        bus.log("written where it was asked")
    finally:
        log_router.unsubscribe()
    assert "written where it was asked" in (tmp_path / "relative.log").read_text()


def test_a_file_that_cannot_be_opened_is_one_clear_error(bus, tmp_path):
    wspbus_logger = logging.getLogger("wspbus")
    missing_dir = tmp_path / "no" / "access.log"
    log_router = LogRouter(bus, error_log=str(tmp_path / "error.log"), access_log=str(missing_dir))
    expected = r"cannot open the access log '.*access\.log' for appending: No such file"
    with pytest.raises(ValueError, match=expected):
        log_router.subscribe()
    # The error log opened first was closed again (a leak would fail as a ResourceWarning) and
    # the 'wspbus' logger was given back as it was.
    assert not wspbus_logger.handlers and wspbus_logger.propagate


def test_a_failed_reopen_is_logged_and_logging_goes_on(bus, router, tmp_path):
    error_log = tmp_path / "error.log"
    router(error_log=str(error_log))
    error_log.rename(tmp_path / "error.log.1")
    error_log.mkdir()  # the path cannot be opened as a file any more
    bus.graceful()
    bus.log("still logging")
    rotated = (tmp_path / "error.log.1").read_text()
    expected = r"ERROR Cannot reopen log file '.*error\.log' \(Is a directory\); still writing"
    assert re.search(expected, rotated)
    assert "still logging" in rotated


CHILD = """
    import logging, sys
    from wspbus import Bus
    from wspbus.plugins.logs import LogRouter

    logging.basicConfig(stream=sys.stderr, format="ROOT %(message)s")  # would print a 2nd copy
    bus = Bus()
    LogRouter(bus, error_log="-", access_log="-").subscribe()
    bus.start()
    bus.log("hello from the child", level=30)
    logging.getLogger("wspbus.access").info({clf!r})
    bus.exit()
"""


def test_stderr_route_in_a_real_process(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(clf=CLF_LINE)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=DEADLINE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert done.returncode == 0, done.stderr
    stderr = done.stderr.splitlines()
    [hello] = [line for line in stderr if "hello from the child" in line]  # once, not twice
    assert re.fullmatch(TIMESTAMP + " WARNING hello from the child", hello)
    assert len([line for line in stderr if re.fullmatch(TIMESTAMP + " INFO Bus STARTED", line)]) == 1
    assert not [line for line in stderr if line.startswith("ROOT")]
    assert done.stdout == CLF_LINE + "\n"  # the access log's '-' is stdout


ROTATED_CHILD = """
    import sys
    from wspbus import Bus
    from wspbus.plugins.logs import LogRouter
    from wspbus.plugins.signals import SignalHandler

    bus = Bus()
    LogRouter(bus, error_log=sys.argv[1]).subscribe()
    SignalHandler(bus).subscribe()

    def announce():
        bus.log("logged after the reopen")
        print("graceful done", flush=True)

    bus.subscribe("graceful", announce, priority=90)
    bus.start()
    print("started", flush=True)
    bus.block()
"""


def test_logrotate_move_and_sigusr1_in_a_real_process(spawn, tmp_path):
    error_log = tmp_path / "error.log"
    child = spawn(ROTATED_CHILD, str(error_log))
    child.expect("^started$")
    error_log.rename(tmp_path / "error.log.1")  # what logrotate does before its postrotate kill
    child.send(signal.SIGUSR1)
    child.expect("^graceful done$")
    rotated, fresh = (tmp_path / "error.log.1").read_text(), error_log.read_text()
    assert "Bus STARTED" in rotated and "logged after the reopen" not in rotated
    assert "logged after the reopen" in fresh and "Bus STARTED" not in fresh
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    assert "Bus EXITED" in error_log.read_text()

"""SignalHandler in real child processes that run ``bus.start(); bus.block()`` and get real signals."""

from __future__ import annotations

import os
import pty
import signal
import textwrap
import threading
import time

import pytest

from wspbus import Bus
from wspbus.plugins.signals import SignalHandler


def child_code(setup: str = "", graceful_timeout: float = 10) -> str:
    """A bus with a SignalHandler that reports each signal channel it publishes, and on which thread."""
    return textwrap.dedent("""\
        import os, sys, threading
        from wspbus import Bus
        from wspbus.plugins.signals import SignalHandler

        def say(*words):  # one write per line: threads print at once here
            sys.stdout.write(" ".join(map(str, words)) + "\\n")

        bus = Bus(graceful_timeout=%r)
        bus.subscribe("log", lambda msg, level=20: say("LOG", msg))
        handler = SignalHandler(bus)
        incarnation = int(os.environ.get("INCARNATION", "0"))
        os.environ["INCARNATION"] = str(incarnation + 1)
        """ % graceful_timeout) + textwrap.dedent(setup) + textwrap.dedent("""\
        handler.subscribe()
        for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"):
            bus.subscribe(name, lambda name=name: say(
                "published", name, "on", threading.current_thread().name))
        bus.subscribe("graceful", lambda: say("graceful on", threading.current_thread().name))
        bus.start()
        say("ready", os.getpid(), incarnation)
        bus.block()
        say("block returned")
        """)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_exit_the_bus_from_a_worker_thread(spawn, signum):
    child = spawn(child_code())
    child.expect(r"^ready")
    child.send(signum)
    name = signal.Signals(signum).name
    child.expect(r"^published %s on wspbus %s$" % (name, name))  # the channel, outside the handler
    child.expect(r"^LOG Bus EXITED$")
    child.expect(r"^block returned$")
    assert child.wait() == 0


def test_sigusr1_is_graceful_and_the_process_goes_on(spawn):
    child = spawn(child_code())
    child.expect(r"^ready")
    child.send(signal.SIGUSR1)
    child.expect(r"^published SIGUSR1 on wspbus SIGUSR1$")
    child.expect(r"^graceful on wspbus SIGUSR1$")
    child.send(signal.SIGUSR1)  # still running, still handling
    child.expect(r"^graceful on wspbus SIGUSR1$")
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    assert "LOG Bus STOPPING" in child.output()


def test_sighup_without_a_terminal_restarts_by_re_executing(spawn):
    child = spawn(child_code())  # stdin is /dev/null: a service manager asking for a reload
    first = child.expect(r"^ready (\d+) 0$")
    child.send(signal.SIGHUP)
    child.expect(r"^published SIGHUP on wspbus SIGHUP$")
    second = child.expect(r"^ready (\d+) 1$")  # a new incarnation of the program ...
    assert second.group(1) == first.group(1) == str(child.pid)  # ... in the same process: execv
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    assert "ready %d 2" % child.pid not in child.output()


def test_sighup_with_a_terminal_on_stdin_exits(spawn):
    master, slave = pty.openpty()
    try:
        child = spawn(child_code(), stdin=slave)
        os.close(slave)
        slave = None
        child.expect(r"^ready \d+ 0$")
        child.send(signal.SIGHUP)
        child.expect(r"terminal went away; exiting")
        assert child.wait() == 0
        assert "ready %d 1" % child.pid not in child.output()  # not re-executed
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)


def test_second_sigterm_during_a_hung_stop_exits_at_once(spawn):
    hung_stop = """\
        bus.subscribe("stop", lambda: (say("stop hangs"), threading.Event().wait()))
        """
    child = spawn(child_code(hung_stop, graceful_timeout=60))
    child.expect(r"^ready")
    child.send(signal.SIGTERM)
    child.expect(r"^stop hangs$")
    sent = time.monotonic()
    child.send(signal.SIGTERM)
    status = child.wait()
    elapsed = time.monotonic() - sent
    assert status == 128 + signal.SIGTERM
    assert "Received SIGTERM while shutting down: exiting now with status 143." in child.output()
    assert elapsed < 10  # not the 60 s graceful timeout


def test_handlers_map_replaces_an_action(spawn):
    drain = """\
        handler.handlers["SIGTERM"] = lambda: say("custom SIGTERM action while", bus.state)
        """
    child = spawn(child_code(drain))
    child.expect(r"^ready")
    child.send(signal.SIGTERM)
    child.expect(r"^custom SIGTERM action while states.STARTED$")
    child.expect(r"^published SIGTERM on wspbus SIGTERM$")
    child.send(signal.SIGUSR1)  # the bus was left running by the custom action
    child.expect(r"^graceful on")
    child.send(signal.SIGTERM)  # a second terminating signal is the way out
    assert child.wait() == 128 + signal.SIGTERM


def test_unsubscribe_restores_the_previous_handlers(spawn):
    child = spawn("""\
        import os, signal
        from wspbus import Bus
        from wspbus.plugins.signals import SignalHandler

        signal.signal(signal.SIGUSR1, lambda signum, frame: print("previous SIGUSR1 handler ran"))
        bus = Bus(graceful_timeout=10)
        bus.subscribe("graceful", lambda: print("graceful ran"))
        handler = SignalHandler(bus)
        handler.subscribe()
        installed = signal.getsignal(signal.SIGTERM)
        handler.unsubscribe()
        print("installed ours:", installed is not signal.SIG_DFL,
              "restored default:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
              "listeners left:", len(bus.listeners["SIGTERM"]))
        bus.start()
        print("ready")
        bus.block()
        """)
    child.expect(r"^installed ours: True restored default: True listeners left: 0$")
    child.expect(r"^ready$")
    child.send(signal.SIGUSR1)
    child.expect(r"^previous SIGUSR1 handler ran$")
    child.send(signal.SIGTERM)
    assert child.wait() == -signal.SIGTERM  # the default action again: killed by the signal
    assert "graceful ran" not in child.output()


def test_subscribe_from_another_thread_logs_and_installs_nothing():
    bus = Bus(graceful_timeout=10)
    logged: list[tuple[str, int]] = []
    bus.subscribe("log", lambda msg, level=20: logged.append((msg, level)))
    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
    before = {signum: signal.getsignal(signum) for signum in watched}
    handler = SignalHandler(bus)
    thread = threading.Thread(target=handler.subscribe, name="not-main")
    thread.start()
    thread.join(10)
    assert {signum: signal.getsignal(signum) for signum in watched} == before
    assert "SIGTERM" not in bus.listeners
    assert not [t for t in threading.enumerate() if t.name == "wspbus signals"]
    assert logged == [(
        "SignalHandler.subscribe() called from thread 'not-main', not the main thread: no signal "
        "handler was installed (Python handles signals only in the main thread).", 30)]


def test_unknown_signal_name_is_a_clear_error():
    handler = SignalHandler(Bus(graceful_timeout=10))
    with pytest.raises(ValueError, match=r"^No such signal: 'SIGFOO' \(expected a name like 'SIGTERM'\)$"):
        handler.set_handler("SIGFOO")
    assert handler.signals[signal.SIGTERM] == "SIGTERM"
    assert set(handler.handlers) == {"SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"}

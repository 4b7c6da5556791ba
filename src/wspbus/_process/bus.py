"""The process's bus: the core Bus, plus what ending the process takes.

The core (wspbus._core.bus) is the state machine and knows nothing of processes: after
restart(), its block() returns with ``execv`` set. This Bus, ``wspbus.Bus``, acts on the end
of the process as CherryPy's does: block() re-executes it after a restart (the same program,
with the descriptors kept for it, see reexec), and after a plain exit bounds the interpreter's
own exit so that threads the bus does not own cannot hang it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .._core import bus as core
from . import reexec
from .checked_restart import CheckedRestart

__all__ = ["Bus"]


class Bus(core.Bus):
    """Process state machine and messenger for HTTP site deployment (``wspbus.Bus``).

    ``block()`` re-executes the process after ``restart()``, and bounds the interpreter's
    exit by ``graceful_timeout`` after ``exit()``. If the main thread hangs in a 'stop' or
    'exit' listener, nothing would ever end the process: once the watchdog has finished the
    exit, the main thread gets what is left of the exit's bound (plus EXIT_MARGIN) to come back,
    then the process ends.
    Signals are held across the re-exec and taken by the new process as its start begins
    (reexec.SignalHold).
    """

    def __init__(self, *, graceful_timeout: float | None = core.DEFAULT_GRACEFUL_TIMEOUT) -> None:
        super().__init__(graceful_timeout=graceful_timeout)
        #: Called before a restart (wspbus serve imports the site in a child interpreter):
        #: None if the new code can start, else one line saying why not; None: no check.
        self.restart_check: Callable[[], str | None] | None = None
        self._checked_restart = CheckedRestart()
        self.watch_state(self._take_held_signals)

    def restart(self) -> None:
        """Exit and re-execute; with a ``restart_check``, only if the new code passes it."""
        self.request_restart()

    def request_restart(self) -> str | None:
        """restart(), returning why it was refused: the check failed, the old code keeps
        running and the error is logged once (requests during a check share its outcome)."""
        check = self.restart_check
        if check is None or self.exit_begun:
            super().restart()
            return None
        return self._checked_restart.request(check, super().restart, self._restart_refused)

    def _restart_refused(self, why: str) -> None:
        self.log("Reload refused, the running code keeps serving: %s" % why, level=40)

    def _take_held_signals(self, state: core.State) -> None:
        """In a re-executed process, take the signals held across the exec as the start
        begins: a SIGTERM sent meanwhile is then an exit asked for while STARTING (which
        wins), not one before the start (which the start would undo)."""
        if state is core.states.STARTING:
            reexec.release_held_signals()

    def start(self) -> None:
        """Start; signals held across the exec are taken at STARTING, or here if it never came."""
        try:
            super().start()
        finally:
            reexec.release_held_signals()

    def _reexecute(self) -> None:
        """Re-execute this process: same interpreter, flags, arguments and working directory.

        The signals the process handles are blocked first (SignalHold); one whose handler ran
        before that and asked for an exit (a SIGTERM) has cancelled the restart: no exec then.
        """
        held = reexec.hold_signals()
        if not self.execv:
            reexec.cancel_signal_hold(held)
            self.log("Not re-spawning: an exit was asked for during the restart")
            left = self.time_left()
            if left is not None:
                self._bound_interpreter_exit(left + core.EXIT_MARGIN)
            return
        args = reexec.command_line()
        self.log("Re-spawning %s" % " ".join(args))
        reexec.reexec(args)

    def _bound_interpreter_exit(self, timeout: float) -> None:
        reexec.bound_interpreter_exit(timeout, self.log, lambda: self.exit_code)

    def _exit_relieved(self, caller: threading.Thread, caller_back: threading.Event) -> None:
        left = self.time_left()  # the exit's one bound: what is left of it, not graceful_timeout more
        if caller is not threading.main_thread() or left is None:
            return  # block() on the main thread ends the process, or the main thread, once back
        threading.Thread(target=self._end_unless_back, args=(caller_back, left + core.EXIT_MARGIN),
                         name="wspbus exit watchdog", daemon=True).start()

    def _end_unless_back(self, caller_back: threading.Event, timeout: float) -> None:
        if caller_back.wait(timeout):
            return
        self.log("The main thread is still in a listener %g s after the exit; ending the process"
                 % timeout, level=40)
        if self.execv:
            self._reexecute()
        reexec.end_process(self.exit_code)

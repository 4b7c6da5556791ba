"""The process's bus: the core Bus, plus what ending the process takes.

The core (wspbus._core.bus) is the state machine and knows nothing of processes: after
restart(), its block() returns with ``execv`` set. This Bus, ``wspbus.Bus``, acts on the end
of the process as CherryPy's does: block() re-executes it after a restart (the same program,
with the descriptors kept for it, see reexec), and after a plain exit bounds the interpreter's
own exit so that threads the bus does not own cannot hang it.
"""

from __future__ import annotations

import threading

from .._core import bus as core
from . import reexec

__all__ = ["Bus"]


class Bus(core.Bus):
    """Process state machine and messenger for HTTP site deployment (``wspbus.Bus``).

    ``block()`` re-executes the process after ``restart()``, and bounds the interpreter's
    exit by ``graceful_timeout`` after ``exit()``. If the main thread hangs in a 'stop' or
    'exit' listener, nothing would ever end the process: once the watchdog has finished the
    exit, the main thread gets ``graceful_timeout`` more to come back, then the process ends.
    """

    def _reexecute(self) -> None:
        """Re-execute this process: same interpreter, flags, arguments and working directory."""
        args = reexec.command_line()
        self.log("Re-spawning %s" % " ".join(args))
        reexec.reexec(args)

    def _bound_interpreter_exit(self, timeout: float) -> None:
        reexec.bound_interpreter_exit(timeout, self.log, lambda: self.exit_code)

    def _exit_relieved(self, caller: threading.Thread, caller_back: threading.Event) -> None:
        if caller is not threading.main_thread() or self.graceful_timeout is None:
            return  # block() on the main thread ends the process, or the main thread, once back
        threading.Thread(target=self._end_unless_back, args=(caller_back, self.graceful_timeout),
                         name="wspbus exit watchdog", daemon=True).start()

    def _end_unless_back(self, caller_back: threading.Event, timeout: float) -> None:
        if caller_back.wait(timeout):
            return
        self.log("The main thread is still in a listener %g s after the exit; ending the process"
                 % timeout, level=40)
        if self.execv:
            self._reexecute()
        reexec.end_process(self.exit_code)

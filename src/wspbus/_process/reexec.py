"""Re-executing the process, and the file descriptors that survive it.

restart() ends in the process bus's block() calling reexec(): the same interpreter with the
same flags and arguments (a script, ``python -m pkg``, a console script), from the directory
the process started in. Descriptors registered with keep_across_exec() (listening sockets, so
clients queue in the backlog during a restart instead of being refused) are inherited and
named in the environment; every other descriptor is marked close-on-exec, found by listing
the process's open descriptors rather than by trying every possible number. The new process
also gets the old one's import map (see import_map), which spares it the search for every
module it imports again.

What this keeps belongs to the process, so it lives in one object per process, made once:
``HANDOVER`` (descriptors passed on and taken over) and ``EXIT_WATCHDOG`` (the bound on the
interpreter's exit). The module's functions are the interface the other layers use.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

#: Where the process started; a daemon changes to '/', a restart must not.
try:
    STARTUP_CWD: str | None = os.getcwd()
except OSError:  # the directory was deleted under us
    STARTUP_CWD = None

#: Environment variable naming the descriptors handed to the re-executed process.
FDS_ENV = "WSPBUS_INHERITED_FDS"
#: Environment variable naming the signals blocked across the re-exec (see SignalHold).
HELD_SIGNALS_ENV = "WSPBUS_HELD_SIGNALS"


class SignalHold:
    """The signals this process handles are blocked across the re-exec, not left to chance.

    A re-executed interpreter starts with the default disposition for every signal it handled
    (exec resets them), so a SIGHUP or SIGTERM that arrives before the new process has installed
    its handlers would kill it (status -1, -15). The signal mask, and signals pending against
    it, survive exec: the old process blocks every signal it handles in Python just before the
    exec and names them in the environment; the new one unblocks them as its bus starts (the
    site's handlers are installed by then), and a signal sent meanwhile is delivered then. Standard signals do not queue: a burst of SIGHUPs is one reload.
    """

    def hold(self) -> list[int]:
        """Block every signal with a Python handler; name them for the next process."""
        import signal

        handled = [signum for signum in signal.valid_signals() if callable(_handler_of(signum))]
        if handled:
            signal.pthread_sigmask(signal.SIG_BLOCK, handled)
            os.environ[HELD_SIGNALS_ENV] = ",".join(str(int(signum)) for signum in handled)
        return [int(signum) for signum in handled]

    def release(self) -> None:
        """Unblock the signals a previous incarnation held across the exec (once; on this thread)."""
        raw = os.environ.pop(HELD_SIGNALS_ENV, "")
        held = [int(part) for part in raw.split(",") if part.strip().isdigit()]
        if held:
            import signal

            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)

    def cancel(self, held: list[int]) -> None:
        """Undo hold() in a process that is not re-executed after all."""
        os.environ.pop(HELD_SIGNALS_ENV, None)
        if held:
            import signal

            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _handler_of(signum: int) -> object:
    import signal

    try:
        return signal.getsignal(signum)
    except (OSError, ValueError):  # a number this interpreter does not handle (SIGKILL's kin)
        return None


class Handover:
    """The descriptors this process hands to its next incarnation, and those its previous one
    handed to it. One per process (``HANDOVER``): a process is re-executed as a whole."""

    def __init__(self) -> None:
        self._kept: dict[int, str] = {}  # fd -> name
        self._inherited: dict[str, int] | None = None  # read from the environment on first use

    def keep(self, fd: int, name: str) -> None:
        """Have descriptor ``fd`` survive a restart; the new process finds it by ``name``."""
        self._kept[fd] = name

    def forget(self, fd: int) -> None:
        """Stop passing ``fd`` across a restart (the socket was closed)."""
        self._kept.pop(fd, None)

    def kept(self) -> dict[int, str]:
        """The descriptors a restart would pass on, with their names."""
        return dict(self._kept)

    def take(self, name: str) -> int | None:
        """The descriptor a previous incarnation of this process passed as ``name``, once."""
        if self._inherited is None:
            self._inherited = _read_inherited_env()
        return self._inherited.pop(name, None)

    def take_named(self, prefix: str) -> dict[str, int]:
        """Every descriptor a previous incarnation passed under a name starting with ``prefix``, once."""
        if self._inherited is None:
            self._inherited = _read_inherited_env()
        names = [name for name in self._inherited if name.startswith(prefix)]
        return {name: self._inherited.pop(name) for name in names}

    def replace_process(self, args: list[str]) -> None:
        """Replace this process with ``args``, passing on the kept descriptors (and the import
        map), from the directory the process started in."""
        if STARTUP_CWD is not None:
            os.chdir(STARTUP_CWD)
        kept = self.kept()
        if kept:
            import json

            os.environ[FDS_ENV] = json.dumps({"pid": os.getpid(), "fds": {n: fd for fd, n in kept.items()}})
        keep = set(kept)
        import_map = _hand_over_import_map()
        if import_map is not None:
            keep.add(import_map)
        mark_close_on_exec(keep)
        flush_stdio()
        os.execv(args[0], args)


def _read_inherited_env() -> dict[str, int]:
    raw = os.environ.pop(FDS_ENV, None)
    if not raw:
        return {}
    import json

    try:
        record = json.loads(raw)
    except ValueError:
        return {}
    if record.get("pid") != os.getpid():  # meant for a parent we forked from, not for us
        return {}
    return {str(name): int(fd) for name, fd in record.get("fds", {}).items()}


def command_line() -> list[str]:
    """The argv that starts this program again, interpreter flags included."""
    original = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return [sys.executable, *original[1:]]


def open_descriptors() -> list[int]:
    """This process's open file descriptors, listed by the kernel."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        return sorted(int(name) for name in names if name.isdigit())
    raise OSError("cannot list open file descriptors: neither /proc/self/fd nor /dev/fd exists")


def mark_close_on_exec(keep: set[int]) -> None:
    """Make ``keep`` (and stdio) inheritable and every other open descriptor close-on-exec."""
    for fd in open_descriptors():
        if fd <= 2:
            continue
        try:
            os.set_inheritable(fd, fd in keep)
        except OSError:
            pass  # the descriptor of the directory listing, closed by now


def _hand_over_import_map() -> int | None:
    """The descriptor of the import map for the new process (a head start, never required)."""
    from . import import_map

    try:
        return import_map.hand_over()
    except OSError:  # no temporary file to be had: the new process searches as usual
        return None


def flush_stdio() -> None:
    """Write out what Python still buffers for stdout and stderr (before exec, fork or _exit)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass  # closed, detached or replaced by something without flush()


def end_process(status: int) -> None:
    """End the process now with ``status``: no cleanup beyond flushing stdio, no thread joins."""
    flush_stdio()
    os._exit(status)


Log = Callable[..., None]


class ExitWatchdog:
    """Bounds the interpreter's own exit, so that threads we do not own cannot hang it.

    At interpreter shutdown Python joins non-daemon threads and executor workers without a
    limit. Once armed, a daemon watchdog is started for that phase: if it lasts longer than the
    timeout, the stragglers are named in the log and the process ends with ``status()``. One
    per process (``EXIT_WATCHDOG``): the interpreter exits once; the last arm() sets the terms.
    """

    def __init__(self) -> None:
        self._terms: tuple[float, Log, Callable[[], int]] | None = None

    def arm(self, timeout: float, log: Log, status: Callable[[], int]) -> None:
        """Bound the interpreter's exit by ``timeout`` seconds, telling ``log``, ending with ``status()``."""
        first = self._terms is None
        self._terms = (timeout, log, status)
        if first:
            _register_before_thread_joins(self._start)

    def _start(self) -> None:
        if self._terms is None or not _threads_joined_at_exit():
            return
        watchdog = threading.Timer(self._terms[0], _end_hung_exit, args=self._terms)
        watchdog.daemon = True
        watchdog.start()


def _register_before_thread_joins(func: Callable[[], None]) -> None:
    """Have ``func`` run at interpreter exit before the joins of non-daemon threads and executor
    workers. ``atexit`` runs after them, too late; this private hook of ``threading`` (the one
    concurrent.futures uses) runs before."""
    register: Callable[[Callable[[], None]], None] = getattr(threading, "_register_atexit")
    register(func)


def _threads_joined_at_exit() -> list[threading.Thread]:
    main = threading.main_thread()
    current = threading.current_thread()
    return [
        t for t in threading.enumerate()
        if t is not main and t is not current and t.is_alive() and (not t.daemon or _is_executor_worker(t))
    ]


def _is_executor_worker(thread: threading.Thread) -> bool:
    futures_thread = sys.modules.get("concurrent.futures.thread")
    workers = getattr(futures_thread, "_threads_queues", None)
    return workers is not None and thread in workers


def _end_hung_exit(timeout: float, log: Log, status: Callable[[], int]) -> None:
    stuck = _threads_joined_at_exit()
    try:
        log("Exit still waiting after %g s on threads: %s; ending the process"
            % (timeout, ", ".join(t.name for t in stuck)), level=30)
    finally:
        end_process(status())


#: This process's hand-over, signal hold and exit watchdog, made once; the functions below use them.
HANDOVER = Handover()
SIGNAL_HOLD = SignalHold()
EXIT_WATCHDOG = ExitWatchdog()


def keep_across_exec(fd: int, name: str) -> None:
    """Have descriptor ``fd`` survive a restart; the new process finds it by ``name``."""
    HANDOVER.keep(fd, name)


def forget(fd: int) -> None:
    """Stop passing ``fd`` across a restart (the socket was closed)."""
    HANDOVER.forget(fd)


def take_inherited(name: str) -> int | None:
    """The descriptor a previous incarnation of this process passed as ``name``, once."""
    return HANDOVER.take(name)


def take_inherited_named(prefix: str) -> dict[str, int]:
    """Every descriptor a previous incarnation passed under a name starting with ``prefix``, once."""
    return HANDOVER.take_named(prefix)


def reexec(args: list[str]) -> None:
    """Replace this process with ``args``, passing on the descriptors kept with keep_across_exec()."""
    HANDOVER.replace_process(args)


def hold_signals() -> list[int]:
    """Block the signals this process handles, for the re-exec (SignalHold); which ones."""
    return SIGNAL_HOLD.hold()


def cancel_signal_hold(held: list[int]) -> None:
    """Unblock what hold_signals() blocked: the process is not re-executed after all."""
    SIGNAL_HOLD.cancel(held)


def release_held_signals() -> None:
    """In a re-executed process whose bus starts: take the signals held across the exec."""
    SIGNAL_HOLD.release()


def bound_interpreter_exit(timeout: float, log: Log, status: Callable[[], int]) -> None:
    """Make sure threads we do not own cannot hang the interpreter's own exit (ExitWatchdog)."""
    EXIT_WATCHDOG.arm(timeout, log, status)

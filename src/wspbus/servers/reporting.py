"""How the servers report: a failure in one line, and the log of a server nobody listens to.

Deployment messages (deploy/site.py) build on the same one-line rule.
"""

from __future__ import annotations

__all__ = ["no_log", "one_line"]


def one_line(exc: BaseException) -> str:
    """``Type: message``, the message's lines folded into one (just ``Type`` if it has none)."""
    text = " ".join(str(exc).split())
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def no_log(msg: str, level: int = 20, traceback: bool = False) -> None:
    """A bus's log(msg, level, traceback) that drops everything: the default where no bus is given."""

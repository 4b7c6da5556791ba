"""What goes wrong with a listening socket, said in one line.

Apart from binds.py and activation.py so that both can raise it: binds.py opens a ``fd://`` or
``systemd:`` bind through activation.py.
"""

from __future__ import annotations

import os
import socket

from ..._core.errors import StartupError

__all__ = ["BindError", "reason"]


class BindError(StartupError):
    """A listening socket could not be opened; the message is one line for the user."""


def reason(exc: OSError) -> str:
    """Why ``exc`` happened, as the middle of a sentence: 'address already in use'."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        text = exc.strerror or str(exc)
    else:
        text = os.strerror(exc.errno)
    return text[:1].lower() + text[1:]

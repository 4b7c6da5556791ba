"""The exit statuses of ``wspbus serve`` (and of quickstart()), documented in the README ("Exit statuses")."""

from __future__ import annotations

__all__ = ["EXIT_STATUSES", "EX_CONFIG", "EX_INTERRUPTED", "EX_OK", "EX_UNAVAILABLE", "EX_USAGE"]

EX_OK, EX_USAGE, EX_UNAVAILABLE, EX_CONFIG = 0, 64, 69, 78
EX_INTERRUPTED = 128 + 2  # SIGINT, as a shell reports a command Ctrl-C ended

EXIT_STATUSES = {
    EX_OK: "the site ran and stopped cleanly",
    1: "the site failed while running (a server died, a stop listener failed)",
    EX_USAGE: "the command line is wrong (unknown option, missing argument)",
    EX_UNAVAILABLE: "the site could not start (a port in use, a start listener failed)",
    EX_CONFIG: "the configuration is wrong (unknown key, bad bind, app that does not import, ...)",
    EX_INTERRUPTED: "interrupted (Ctrl-C) while loading the site, before it started",
}

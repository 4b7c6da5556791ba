"""The command-line options of supervised serving, and the choice between the two modes.

Kept here, so that the ``wspbus`` command (cli.py) only adds them to its ``serve`` parser and
asks ``supervised(args)`` which way to run. The default is a supervisor with one worker (the
reasons and the cost are in docs/supervisor.md); ``--single-process`` serves without one.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..config import ConfigError, SiteConfig

if TYPE_CHECKING:  # the pool (asyncio, subprocess) is imported only to serve, not to parse a command line
    from .pool import PoolOptions

__all__ = ["add_arguments", "pool_options", "supervised"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--workers, --single-process and the workers' bounds, in a group of their own."""
    group = parser.add_argument_group("workers")
    mode = group.add_mutually_exclusive_group()
    mode.add_argument("-w", "--workers", metavar="N",
                      help="how many worker processes the supervisor runs (default 1); each is a fresh "
                           "interpreter with its own bus, and a reload starts new ones before stopping the old")
    mode.add_argument("--single-process", action="store_true",
                      help="no supervisor: serve from this one process, which re-executes itself to reload")
    group.add_argument("--worker-timeout", metavar="SECONDS",
                       help="with --workers: a worker silent this long (hung) has its stacks logged and is replaced")
    group.add_argument("--max-requests", metavar="N",
                       help="replace a worker (new one first) once it served N requests")
    group.add_argument("--max-requests-jitter", metavar="J",
                       help="add a random 0..J to each worker's --max-requests, so they are not all replaced at once")
    group.add_argument("--max-worker-memory", metavar="MB",
                       help="replace a worker (new one first) once its resident size passes MB megabytes")
    group.add_argument("--start-timeout", metavar="SECONDS",
                       help="with --workers: how long a worker may take to start (default 60; inf: no limit)")


def supervised(args: argparse.Namespace) -> bool:
    """True unless --single-process: a supervisor and --workers N (default 1) workers."""
    return not getattr(args, "single_process", False)


def pool_options(args: argparse.Namespace, config: SiteConfig) -> PoolOptions:
    """PoolOptions from the command line; ConfigError (one line, exit 78) for a bad value."""
    from .pool import PoolOptions

    return PoolOptions(
        workers=config.workers or 1,  # --workers went into the configuration ([site] workers)
        graceful_timeout=config.graceful_timeout,
        start_timeout=_seconds("--start-timeout", args.start_timeout, 60.0),
        worker_timeout=_seconds("--worker-timeout", args.worker_timeout, None),
        max_requests=_count("--max-requests", args.max_requests) if args.max_requests else None,
        max_requests_jitter=_count("--max-requests-jitter", args.max_requests_jitter, 0)
        if args.max_requests_jitter else 0,
        max_worker_memory=_count("--max-worker-memory", args.max_worker_memory) * 1_000_000
        if args.max_worker_memory else None,
    )


def _count(option: str, text: str, least: int = 1) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < least:
        raise ConfigError("%s: expected a whole number of at least %d, got %r" % (option, least, text))
    return int(text)


def _seconds(option: str, text: str | None, default: float | None) -> float | None:
    if text is None:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:  # also NaN
        raise ConfigError("%s: expected a number of seconds above 0 (inf: no limit), got %r" % (option, text))
    return None if seconds == float("inf") else seconds

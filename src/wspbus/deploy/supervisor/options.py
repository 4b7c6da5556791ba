"""The command-line options of supervised serving, and the choice between the two modes.

Kept here, so that the ``wspbus`` command (cli.py) only adds them to its ``serve`` parser and
asks ``supervised(args)`` which way to run. The default is a supervisor with one worker (the
reasons and the cost are in docs/supervisor.md); ``--single-process`` serves without one. The
bounds on the workers are [site] keys as well (config.py); an option given here overrides the key.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..config import SiteConfig, override

if TYPE_CHECKING:  # the pool (asyncio, subprocess) is imported only to serve, not to parse a command line
    from .pool import PoolOptions

__all__ = ["add_arguments", "pool_options", "supervised"]

#: The bounds on each worker: [site] key -> (metavar, help) of the command-line option that overrides it.
BOUNDS = {
    "worker_timeout": ("SECONDS", "with --workers: a worker hung this long (silent, or all its request threads stuck) "
                                  "has its stacks logged and is replaced"),
    "max_requests": ("N", "replace a worker (new one first) once it served N requests"),
    "max_requests_jitter": ("J", "add a random 0..J to each worker's --max-requests, so they are not all replaced at once"),
    "max_worker_memory": ("MB", "replace a worker (new one first) once its resident size passes MB megabytes"),
    "start_timeout": ("SECONDS", "with --workers: how long a worker may take to start (default 60; inf: no limit)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--workers, --single-process and the workers' bounds, in a group of their own."""
    group = parser.add_argument_group("workers")
    mode = group.add_mutually_exclusive_group()
    mode.add_argument("-w", "--workers", metavar="N",
                      help="how many worker processes the supervisor runs (default 1); each is a fresh "
                           "interpreter with its own bus, and a reload starts new ones before stopping the old")
    mode.add_argument("--single-process", action="store_true",
                      help="no supervisor: serve from this one process, which re-executes itself to reload")
    for key, (metavar, text) in BOUNDS.items():
        group.add_argument("--" + key.replace("_", "-"), metavar=metavar, help=text + " ([site] %s)" % key)


def supervised(args: argparse.Namespace) -> bool:
    """True unless --single-process: a supervisor and --workers N (default 1) workers."""
    return not getattr(args, "single_process", False)


def pool_options(args: argparse.Namespace, config: SiteConfig) -> PoolOptions:
    """PoolOptions from the configuration and the command line over it; ConfigError (one line, exit 78)
    for a bad value."""
    from .pool import PoolOptions

    override(config, {key: getattr(args, key, None) for key in BOUNDS})
    return PoolOptions(
        workers=config.workers or 1,  # --workers went into the configuration ([site] workers)
        graceful_timeout=config.graceful_timeout,
        start_timeout=config.start_timeout,
        worker_timeout=config.worker_timeout,
        max_requests=config.max_requests,
        max_requests_jitter=config.max_requests_jitter,
        max_worker_memory=config.max_worker_memory * 1_000_000 if config.max_worker_memory else None,
    )

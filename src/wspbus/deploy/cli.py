"""The ``wspbus`` command: serve a site; stop, reload or query a running one.

Exit statuses: 0 clean, 1 failed while running, 64 bad command line, 69 could not start
(e.g. a port in use), 78 configuration error; ``status``: 0 running, 3 not running.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import NoReturn

import wspbus

from .exits import EX_CONFIG, EX_USAGE, EXIT_STATUSES

__all__ = ["main"]

SERVE_EPILOG = """\
APP is module:callable, module:factory() or /prefix=module:callable; WSGI or ASGI is
detected from the callable (force it with --protocol). Several apps make one site, each
under its prefix (longest prefix wins); a site with an ASGI app is served by an ASGI server.

examples:
  wspbus serve myapp:app
  wspbus serve -b 0.0.0.0:8080 -b unix:/run/site.sock /=web:app '/api=api:create_app()'
  wspbus serve --config site.toml --reload
  wspbus serve --paste development.ini
  wspbus serve --daemon --pidfile /run/site.pid --user www-data --log-file /var/log/site.log site:app

exit statuses:
%s
""" % "\n".join("  %-3d %s" % item for item in sorted(EXIT_STATUSES.items()))

CONTROL_HELP = {
    "stop": "stop the site (SIGTERM) and wait until it has exited",
    "reload": "re-execute the site with fresh code, keeping its sockets (SIGHUP)",
    "graceful": "ask the site's services to reload their settings (SIGUSR1)",
    "status": "print the site's state, pid, uptime, binds and mounts (exit 0 running, 3 not)",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line and exits 64 (EX_USAGE)."""

    #: Command name -> its parser, to report a mistake in that command's arguments.
    commands: Mapping[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


def build_parser() -> _Parser:
    parser = _Parser(prog="wspbus", description="Run and control a web site on the Web Site Process Bus.",
                     epilog="'wspbus COMMAND --help' describes a command's options.")
    parser.add_argument("--version", action="version", version="wspbus %s" % wspbus.__version__,
                        help="print wspbus's version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    parser.commands = commands.choices
    serve = commands.add_parser(
        "serve", help="serve a site of WSGI/ASGI apps", description="Serve a site of WSGI and ASGI apps.",
        epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_serve(serve)
    _supervisor_options().add_arguments(serve)  # hook: --workers N (deploy/supervisor)
    for name, text in CONTROL_HELP.items():
        control = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        control.add_argument("--pidfile", required=True, metavar="FILE", help="the site's pid file")
        if name == "stop":
            control.add_argument("--timeout", type=_timeout, default=60.0, metavar="SECONDS",
                                 help="how long to wait for the exit (default: %(default)s; inf: no limit)")
        if name == "status":
            control.add_argument("--json", action="store_true", help="print the status record as JSON")
    return parser


def _timeout(text: str) -> float | None:
    """--timeout: seconds of 0 or more; inf waits without limit (None)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise argparse.ArgumentTypeError("expected a number of seconds of 0 or more (inf: no limit), got %r" % text)
    return None if seconds == float("inf") else seconds


def _add_serve(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("apps", nargs="*", metavar="APP", help="an app to mount (see below)")
    site = serve.add_argument_group("site")
    site.add_argument("-c", "--config", metavar="FILE", help="a TOML site file; options given here override it")
    site.add_argument("--paste", metavar="FILE.ini[#NAME]", help="serve the app NAME (default main) of a Paste "
                      "Deploy file, with its logging and [server:main] address, as pserve does")
    site.add_argument("--protocol", choices=("auto", "wsgi", "asgi"), help="treat the apps as WSGI or ASGI "
                      "instead of detecting it")
    site.add_argument("--import", dest="import_", action="append", metavar="MODULE",
                      help="import MODULE first; it may subscribe its own plugins to wspbus.bus (repeatable)")
    site.add_argument("--chdir", metavar="DIR", help="change to DIR before loading the apps")
    site.add_argument("--pythonpath", action="append", metavar="DIR",
                      help="put DIR first on sys.path (repeatable; default: the current directory, after --chdir)")
    servers = serve.add_argument_group("servers")
    servers.add_argument("-b", "--bind", action="append", metavar="ADDRESS",
                         help="HOST:PORT, [IPV6]:PORT, unix:PATH, fd://N or systemd:NAME; port 0 picks "
                              "a free one (repeatable; default 127.0.0.1:8080)")
    servers.add_argument("--server", metavar="NAME", help="auto (default: cheroot for WSGI, uvicorn for ASGI), cheroot, waitress, uvicorn, granian or stdlib")
    servers.add_argument("--threads", type=int, metavar="N", help="worker threads per server")
    process = serve.add_argument_group("process")
    process.add_argument("--reload", action=argparse.BooleanOptionalAction, default=None,
                         help="restart with fresh code when an imported file changes")
    process.add_argument("--daemon", action=argparse.BooleanOptionalAction, default=None,
                         help="run in the background; this command exits once the site has started (or failed to)")
    process.add_argument("--pidfile", metavar="FILE", help="write (and lock) the pid here; enables "
                         "wspbus stop|reload|status --pidfile FILE")
    process.add_argument("--user", metavar="USER", help="switch to USER after binding the ports")
    process.add_argument("--group", metavar="GROUP", help="switch to GROUP after binding the ports")
    process.add_argument("--umask", metavar="MASK", help="set the umask, in octal (e.g. 027)")
    process.add_argument("--drain-delay", metavar="SECONDS",
                         help="after SIGTERM, report not-ready and keep serving this long before stopping "
                              "(Kubernetes; default 0)")
    process.add_argument("--graceful-timeout", metavar="SECONDS",
                         help="how long stopping may take before it is cut short (default 30; inf: no limit)")
    logs = serve.add_argument_group("logs")
    logs.add_argument("--log-file", metavar="FILE", help="where the error log goes (default: stderr, '-')")
    logs.add_argument("--access-log", metavar="FILE", help="write an access log to FILE ('-': stdout)")
    logs.add_argument("--log-level", metavar="LEVEL", help="debug, info (default), warning, error or critical")


def serve(args: argparse.Namespace) -> int:
    from . import config as _config
    from . import paste as _paste
    from .launch import launch

    try:
        site = _config.load(args.config) if args.config else _config.SiteConfig()
        _config.override(site, {
            "graceful_timeout": args.graceful_timeout, "chdir": args.chdir, "pythonpath": args.pythonpath,
            "import": args.import_, "user": args.user, "group": args.group, "umask": args.umask,
            "daemon": args.daemon, "pidfile": args.pidfile, "reload": args.reload,
            "log_file": args.log_file, "access_log": args.access_log, "log_level": args.log_level,
            "paste": args.paste,
            "workers": args.workers,
        })
        _config.command_line_apps(args.apps, args.protocol, site)
        _paste.prepare(site)  # its [server:main], before --bind/--server/--threads override it
        _config.command_line_servers(args.bind, args.server, args.threads, site)
        _config.command_line_drain(args.drain_delay, site)
        supervisor = _supervisor_options()
        if supervisor.supervised(args):  # hook: a supervisor and workers (deploy/supervisor)
            from .supervisor.supervise import supervise

            return supervise(site, supervisor.pool_options(args, site))
    except _config.ConfigError as exc:
        print("wspbus: error: %s" % exc, file=sys.stderr, flush=True)
        return EX_CONFIG
    return launch(site)


def _supervisor_options() -> ModuleType:
    from .supervisor import options

    return options


def control(args: argparse.Namespace) -> int:
    from . import control as _control

    try:
        supervised = _supervisor_client(args)  # hook: ask a supervisor on its control socket
        if supervised is not None:
            return supervised
        if args.command == "status":
            record = _control.read_status(args.pidfile)
            if args.json:
                import json

                print(json.dumps(record, indent=2))
            else:
                print("\n".join(_control.describe_status(record)))
            return _control.RUNNING
        if args.command == "stop":
            pid = _control.stop(args.pidfile, args.timeout)
            print("wspbus: stopped the site (pid %d)" % pid)
        else:
            pid = _control.send(args.pidfile, args.command)
            print("wspbus: sent %s to the site (pid %d)" % (args.command, pid))
        return 0
    except _control.ControlError as exc:
        print("wspbus: %s" % exc, file=sys.stderr)
        return exc.status


def _supervisor_client(args: argparse.Namespace) -> int | None:
    """reload and status of a supervised site (it has a control socket); None: not one."""
    from .supervisor import client

    if args.command not in ("reload", "status") or not client.available(args.pidfile):
        return None
    if args.command == "reload":
        answer = client.reload(args.pidfile)
        print("wspbus: reloaded: generation %s serves (pids %s)"
              % (answer.get("generation"), ", ".join(map(str, answer.get("pids", [])))))
        return 0
    record = client.status(args.pidfile)
    if args.json:
        import json

        print(json.dumps(record, indent=2))
    else:
        from . import control as _control

        print("\n".join(_control.describe_status(record) + client.describe_workers(record)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wspbus`` console script; returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.commands[args.command].error("unrecognized arguments: %s" % " ".join(unknown))
    if args.command == "serve":
        return serve(args)
    return control(args)


if __name__ == "__main__":
    sys.exit(main())

"""The supervisor's parts that need no process: the channel's framing, the back-off, the config's crossing,
the stack dump's lines, the judge of stuck request threads."""

from __future__ import annotations

import textwrap
import time

import pytest

from wspbus import Bus
from wspbus.deploy.config import ConfigError, PluginConfig, ServerConfig, SiteConfig
from wspbus.deploy.supervisor.backoff import Backoff
from wspbus.deploy.supervisor.channel import ChannelError, LineReader, encode
from wspbus.deploy.supervisor.control_socket import control_path
from wspbus.deploy.supervisor.recycling import request_limit
from wspbus.deploy.supervisor.settings import from_dict, to_dict, worker_config
from wspbus.deploy.supervisor.stacks import HELD_MAX, StackDump
from wspbus.deploy.supervisor.stuck import StuckThreads, request_threads
from wspbus.servers.httpserver import HTTPServer


def test_a_message_split_anywhere_arrives_whole_and_once():
    data = encode("started", urls=["http://127.0.0.1:1"], mounts=[]) + encode("stats", requests=3, rss=5)
    for cut in range(len(data) + 1):
        reader = LineReader()
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert [m["kind"] for m in got] == ["started", "stats"]


def test_what_is_not_a_message_is_a_channel_error():
    with pytest.raises(ChannelError):
        LineReader().feed(b"not json\n")
    with pytest.raises(ChannelError):
        LineReader().feed(b'{"no": "kind"}\n')
    with pytest.raises(ChannelError):
        LineReader().feed(b"x" * (1 << 21))


DUMP = (b"Fatal Python error: Aborted\n\n"
        b"Thread 0x00007f01 (most recent call first):\n"
        b'  File "/srv/app.py", line 7 in handler\n\n'
        b"Current thread 0x00007f02 (most recent call first):\n"
        b'  File "/srv/app.py", line 7 in handler\n')


def test_a_stack_dump_split_anywhere_is_held_whole_and_each_line_names_worker_and_thread():
    for cut in range(len(DUMP) + 1):
        dump = StackDump(42)
        assert dump.feed(DUMP[:cut]) == [] and dump.feed(DUMP[cut:]) == []  # held until the worker ends
        assert dump.take() == [
            "[worker 42] Fatal Python error: Aborted",
            "[worker 42] Thread 0x00007f01 (most recent call first):",
            '[worker 42] thread 0x00007f01 File "/srv/app.py", line 7 in handler',
            "[worker 42] Current thread 0x00007f02 (most recent call first):",
            '[worker 42] thread 0x00007f02 File "/srv/app.py", line 7 in handler',  # not a repeat of the line above
        ]


def test_a_stack_dump_too_big_to_hold_is_logged_by_whole_lines():
    dump = StackDump(42)
    lines = dump.feed(b"x" * HELD_MAX + b"\npartial")
    assert lines == ["[worker 42] " + "x" * HELD_MAX]
    assert dump.take() == ["[worker 42] partial"]


def _hello(environ, start_response):
    start_response("200 OK", [])
    return [b""]


def test_a_server_is_stuck_once_its_threads_are_all_taken_and_nothing_began_or_ended_for_the_timeout():
    server = HTTPServer(Bus(), _hello, "127.0.0.1:0", server="cheroot", threads=2)  # never started
    ahead = [0.0]  # how far past now the judge looks
    judge = StuckThreads([server], 2.0, clock=lambda: time.monotonic() + ahead[0])
    request = server.in_flight.wrap(_hello, "wsgi")
    first = request({}, lambda *args: None)
    ahead[0] = 60
    assert judge.reason() is None  # one long request, and a thread free: slow, not stuck
    second = request({}, lambda *args: None)
    ahead[0] = 1.9
    assert judge.reason() is None  # every thread taken, but a request began within the timeout
    ahead[0] = 2.1
    assert "has all 2 request threads of 127.0.0.1:0 (cheroot) busy" in judge.reason()
    first.close()
    assert judge.reason() is None  # a request ended: a thread is free again
    second.close()


def test_only_a_server_with_a_pool_of_request_threads_can_be_stuck():
    bus = Bus()
    assert request_threads(HTTPServer(bus, _hello, "127.0.0.1:0", server="cheroot")) == 10  # cheroot's own default
    assert request_threads(HTTPServer(bus, _hello, "127.0.0.1:0", server="stdlib", threads=2)) is None  # one per connection


def test_back_off_is_none_for_a_first_death_then_doubles_up_to_the_ceiling():
    backoff = Backoff(first=0.25, ceiling=2.0, stable_after=10.0)
    assert [backoff.died(0, None) for _ in range(6)] == [0.0, 0.25, 0.5, 1.0, 2.0, 2.0]
    assert backoff.died(1, None) == 0.0  # slots are counted apart


def test_a_worker_that_served_long_enough_wipes_its_slots_slate():
    backoff = Backoff(stable_after=10.0)
    backoff.died(0, None)
    backoff.died(0, None)
    assert backoff.died(0, serving_since=-1e9) == 0.0


def test_the_workers_copy_serves_inherited_sockets_and_leaves_the_site_wide_duties():
    config = SiteConfig(daemon=True, pidfile="/run/site.pid", user=33, servers=[ServerConfig(binds=["a:1", "b:2"])],
                        plugins={"drain": PluginConfig("drain", "w", {"drain_delay": 5}),
                                 "health": PluginConfig("health", "w", {})})
    worker = from_dict(to_dict(worker_config(config, [[7, 8]])))
    assert worker.servers[0].binds == ["fd://7", "fd://8"]
    assert not worker.daemon and worker.pidfile is None and worker.user == 33  # the worker drops privileges
    assert worker.plugins["drain"].options["enabled"] is False and "enabled" not in worker.plugins["health"].options
    assert config.servers[0].binds == ["a:1", "b:2"]  # the supervisor's own is untouched


def test_a_setting_that_cannot_cross_to_the_workers_is_a_configuration_error():
    import datetime

    config = SiteConfig(plugins={"health": PluginConfig("health", "site.toml: [plugins.health]",
                                                        {"since": datetime.date(2024, 1, 1)})})
    with pytest.raises(ConfigError, match="with workers, plugin settings must be"):
        to_dict(config)


def test_the_control_socket_sits_beside_the_pid_file():
    assert control_path("/run/site.pid") == "/run/site.control.sock"
    assert control_path("/run/pidfile") == "/run/pidfile.control.sock"


def test_each_worker_gets_its_own_request_limit_within_the_jitter():
    limits = {request_limit(100, 10) for _ in range(200)}
    assert limits <= set(range(100, 111)) and len(limits) > 1
    assert request_limit(None, 10) is None and request_limit(100, 0) == 100


def test_the_workers_bounds_are_site_keys_and_the_command_line_overrides_them(tmp_path):
    from wspbus.deploy.cli import build_parser
    from wspbus.deploy.config import load
    from wspbus.deploy.supervisor.options import pool_options

    (tmp_path / "site.toml").write_text(textwrap.dedent("""
        [site]
        worker_timeout = 30
        max_requests = 1000
        max_requests_jitter = 50
        max_worker_memory = 512
        start_timeout = "inf"
    """))
    config = load(str(tmp_path / "site.toml"))
    options = pool_options(build_parser().parse_args(["serve", "--max-requests", "200", "site:app"]), config)
    assert (options.worker_timeout, options.max_requests, options.max_requests_jitter, options.max_worker_memory,
            options.start_timeout) == (30.0, 200, 50, 512_000_000, None)
    defaults = pool_options(build_parser().parse_args(["serve", "site:app"]), SiteConfig())
    assert (defaults.worker_timeout, defaults.max_requests, defaults.max_requests_jitter, defaults.max_worker_memory,
            defaults.start_timeout) == (None, None, 0, None, 60.0)


@pytest.mark.parametrize("line, expected", [
    ("worker_timeout = 0", "worker_timeout: expected a number of seconds above 0 (inf for no limit), got 0"),
    ("start_timeout = -1", "start_timeout: expected a number of seconds above 0 (inf for no limit), got -1"),
    ("max_requests = 0", "max_requests: expected a whole number of at least 1, got 0"),
    ("max_requests_jitter = -5", "max_requests_jitter: expected a whole number of at least 0, got -5"),
    ("max_worker_memory = 1.5", "max_worker_memory: expected a whole number of at least 1, got 1.5"),
    ("max_request = 10", "max_request: unknown key (expected one of: "),
])
def test_a_bad_bound_in_the_site_file_is_one_line_naming_the_key(tmp_path, line, expected):
    from wspbus.deploy.config import load

    (tmp_path / "site.toml").write_text("[site]\n%s\n" % line)
    with pytest.raises(ConfigError) as raised:
        load(str(tmp_path / "site.toml"))
    assert str(raised.value).startswith("%s: [site] %s" % (tmp_path / "site.toml", expected))


def test_a_bad_bound_on_the_command_line_is_one_line_naming_the_option():
    from wspbus.deploy.cli import build_parser
    from wspbus.deploy.supervisor.options import pool_options

    args = build_parser().parse_args(["serve", "--worker-timeout", "soon", "site:app"])
    with pytest.raises(ConfigError, match=r"^--worker-timeout: expected a number of seconds above 0 "
                                          r"\(inf for no limit\), got 'soon'$"):
        pool_options(args, SiteConfig())


def test_a_wsgi_app_on_an_asgi_server_is_judged_by_the_bridge_threads_and_an_asgi_app_never():
    bus = Bus()
    assert request_threads(HTTPServer(bus, _hello, "127.0.0.1:0", server="uvicorn")) == 10  # the bridge's default
    assert request_threads(HTTPServer(bus, _hello, "127.0.0.1:0", server="uvicorn", threads=3)) == 3

    async def asgi(scope, receive, send):
        pass

    assert request_threads(HTTPServer(bus, asgi, "127.0.0.1:0", server="uvicorn", protocol="asgi")) is None


def test_a_thread_streaming_a_body_is_busy_not_stuck():
    """A download or server-sent events: each piece sent is progress."""
    server = HTTPServer(Bus(), _hello, "127.0.0.1:0", server="cheroot", threads=1)  # never started
    judge = StuckThreads([server], 2.0)

    def streaming(environ, start_response):
        start_response("200 OK", [])
        return (b"piece %d" % n for n in range(3))

    body = server.in_flight.wrap(streaming, "wsgi")({}, lambda *args: None)
    pieces = iter(body)
    server.in_flight._last_change -= 10  # as if it had begun 10 s ago
    assert "has all 1 request threads" in judge.reason()  # begun, nothing sent for the timeout
    next(pieces)
    assert judge.reason() is None  # a piece went out just now
    body.close()

"""The supervisor's parts that need no process: the channel's framing, the back-off, the config's crossing."""

from __future__ import annotations

import pytest

from wspbus.deploy.config import ConfigError, PluginConfig, ServerConfig, SiteConfig
from wspbus.deploy.supervisor.backoff import Backoff
from wspbus.deploy.supervisor.channel import ChannelError, LineReader, encode
from wspbus.deploy.supervisor.control_socket import control_path
from wspbus.deploy.supervisor.recycling import request_limit
from wspbus.deploy.supervisor.settings import from_dict, to_dict, worker_config


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

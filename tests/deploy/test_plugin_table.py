"""Which plugins a site's bus gets: the built-in ones the configuration asks for, with what settings,
and third-party [[plugin]] entries (deploy/plugin_table.py)."""

from __future__ import annotations

import textwrap

import pytest
from serve_support import get

import wspbus
from wspbus.deploy.config import ConfigError, PluginConfig, SiteConfig
from wspbus.deploy.launch import deploy
from wspbus.deploy.plugin_table import BUILTIN_PLUGINS, SWITCHABLE_PLUGINS, build_plugins
from wspbus.deploy.site import Site, mount_app


def hello(environ, start_response):
    start_response("200 OK", [])
    return [b"hello"]




def plugin_config(name, **options):
    return PluginConfig(name, "site.toml: [plugins.%s]" % name, options)


def test_serve_always_has_signals_and_logs_and_the_rest_on_demand():
    bus = wspbus.Bus()
    config = SiteConfig(reload=True, pidfile="/tmp/x.pid", umask=0o027)
    config.plugins = {"reload": plugin_config("reload", frequency=2), "threads": plugin_config("threads"),
                      "systemd": plugin_config("systemd", enabled=False)}
    built = build_plugins(bus, config)
    assert sorted(built) == ["logs", "pidfile", "privileges", "reaper", "reload", "signals", "threads"]
    assert built["reload"].frequency == 2
    assert built["privileges"].umask == 0o027
    assert not bus.listeners["start"]  # built, not subscribed: nothing happens until deploy() subscribes


def test_the_reaper_is_on_unless_disabled_and_systemd_when_systemd_asks(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert "systemd" not in build_plugins(wspbus.Bus(), SiteConfig())
    monkeypatch.setenv("NOTIFY_SOCKET", "@wspbus-test-notify")
    built = build_plugins(wspbus.Bus(), SiteConfig())
    assert type(built["systemd"]).__name__ == "SystemdNotifier"
    assert type(built["reaper"]).__name__ == "ChildReaper"
    config = SiteConfig()
    config.plugins = {"reaper": plugin_config("reaper", enabled=False),
                      "systemd": plugin_config("systemd", enabled=False)}
    built = build_plugins(wspbus.Bus(), config)
    assert "reaper" not in built and "systemd" not in built


def test_drain_delay_on_the_command_line_turns_the_drainer_on():
    from wspbus.deploy import config as site_config

    config = SiteConfig()
    site_config.command_line_drain("2.5", config)
    built = build_plugins(wspbus.Bus(), config)
    assert built["drain"].drain_delay == 2.5
    with pytest.raises(site_config.ConfigError, match=r"^--drain-delay: .*got 'soon'"):
        site_config.command_line_drain("soon", SiteConfig())


def test_a_site_inside_a_test_process_handles_no_signals_and_routes_no_logs():
    built = build_plugins(wspbus.Bus(), SiteConfig(), own_process=False)
    assert built == {}


@pytest.mark.parametrize("plugins, expected", [
    ({"reload": plugin_config("reload", frequncy=2)},
     r"^site\.toml: \[plugins\.reload\] frequncy: unknown setting \(expected one of: frequency, match, backend\)$"),
    ({"reload": plugin_config("reload", frequency=-1)},
     r"^site\.toml: \[plugins\.reload\]: Autoreloader frequency must be a positive number"),
    ({"reload": plugin_config("reload", match="(")},
     r"^site\.toml: \[plugins\.reload\]: Autoreloader match must be a regular expression, not '\('"),
    ({"warp": plugin_config("warp")}, r"unknown plugin 'warp' \(expected one of: signals, logs,"),
    ({"threads": plugin_config("threads", enabled="yes")}, r"\[plugins\.threads\] enabled: expected true or false"),
])
def test_plugin_settings_are_checked_against_the_plugin(plugins, expected):
    config = SiteConfig(source="site.toml", reload=True)
    config.plugins = plugins
    with pytest.raises(ConfigError, match=expected):
        build_plugins(wspbus.Bus(), config)


@pytest.mark.parametrize("name", sorted(BUILTIN_PLUGINS))
def test_an_unknown_setting_is_an_error_whether_its_plugin_is_on_or_not(name):
    """[plugins.reload] frequncy = 1 with reload off was accepted in silence: every table is checked."""
    for enabled in (False, True):
        config = SiteConfig(source="site.toml")
        options = {"frequncy": 1, **({"enabled": False} if not enabled and name in SWITCHABLE_PLUGINS else {})}
        config.plugins = {name: plugin_config(name, **options)}
        with pytest.raises(ConfigError) as raised:
            build_plugins(wspbus.Bus(), config)
        message = str(raised.value)
        assert message.startswith("site.toml: [plugins.%s] frequncy: unknown setting (expected one of: " % name)
        assert "\n" not in message


def test_enabled_is_a_setting_only_of_the_plugins_a_table_turns_on():
    config = SiteConfig(source="site.toml")
    config.plugins = {"reload": plugin_config("reload", enabled=True)}  # reload is turned on by [site] reload
    with pytest.raises(ConfigError, match=r"^site\.toml: \[plugins\.reload\] enabled: unknown setting"):
        build_plugins(wspbus.Bus(), config)


def test_a_third_party_plugin_is_built_from_its_path_with_its_options(tmp_path, monkeypatch):
    (tmp_path / "thirdparty_plugin.py").write_text(textwrap.dedent("""
        from wspbus.plugins import SimplePlugin

        class Greeter(SimplePlugin):
            def __init__(self, bus, greeting, times=1):
                super().__init__(bus)
                self.said = []
                self.greeting, self.times = greeting, times

            def start(self):
                self.said.append(self.greeting * self.times)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = SiteConfig(source="site.toml")
    config.extra_plugins = [PluginConfig("thirdparty_plugin:Greeter", "site.toml: [[plugin]] #1",
                                         {"greeting": "hi", "times": 2}, path="thirdparty_plugin:Greeter")]
    bus = wspbus.Bus()
    deployment = deploy(bus, config, Site([mount_app("/", hello)]), own_process=False)
    greeter = deployment.plugins["site.toml: [[plugin]] #1"]
    bus.start()
    try:
        assert greeter.said == ["hihi"]
        assert get(deployment.urls()[0]) == (200, b"hello")
    finally:
        bus.exit()
    config.extra_plugins[0].options = {"greting": "hi"}
    with pytest.raises(ConfigError, match=r"\[\[plugin\]\] #1 greting: unknown setting \(expected one of: greeting, times\)"):
        deploy(wspbus.Bus(), config, Site([mount_app("/", hello)]), own_process=False)

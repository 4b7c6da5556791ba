"""The TOML site file and command-line overrides: what is read, and one-line errors for mistakes."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from wspbus.deploy import config
from wspbus.deploy.config import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "serve.md"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "site.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_the_documented_complete_example_is_read_as_documented(tmp_path):
    example = re.search(r"```toml\n(# site\.toml.*?)```", DOCS.read_text(), re.S).group(1)
    site = config.load(write(tmp_path, example))
    assert site.graceful_timeout == 30.0
    assert site.chdir == "/srv/mysite"
    assert site.pythonpath == [str(tmp_path / "src"), str(tmp_path)]  # relative to the file
    assert site.imports == ["mysite.plugins"]
    assert (site.user, site.group, site.umask) == (33, 33, 0o027)
    assert site.pidfile == str(tmp_path / "run" / "site.pid")
    assert [(s.binds, s.server, s.threads) for s in site.servers] == [
        (["0.0.0.0:8080", "[::]:8080"], "auto", 16), (["unix:%s" % (tmp_path / "run" / "site.sock")], "auto", None)]
    assert [(a.mount, a.target, a.protocol) for a in site.apps] == [
        ("/", "mysite.web:app", "auto"), ("/api", "mysite.api:create_app('prod')", "auto")]
    assert site.plugins["reload"].options == {"frequency": 1, "match": "^mysite"}
    assert site.plugins["systemd"].options == {}
    assert [(p.path, p.options) for p in site.extra_plugins] == [("mysite.plugins:CacheWarmer", {"size": 1000})]


def test_values_take_their_other_accepted_forms(tmp_path):
    site = config.load(write(tmp_path, """
        [site]
        graceful_timeout = inf
        umask = 0o022
        user = 0
        pythonpath = "lib"
        log_file = "-"
    """))
    assert site.graceful_timeout is None
    assert site.umask == 0o022 and site.user == 0
    assert site.pythonpath == [str(tmp_path / "lib")]
    assert site.log_file == "-"
    assert site.servers == [] and site.apps == []


@pytest.mark.parametrize("text, expected", [
    ("[sight]\n", r"site\.toml: sight: unknown key \(expected tables: \[site\]"),
    ("[site]\ngracefull_timeout = 3\n", r"\[site\] gracefull_timeout: unknown key \(expected one of: graceful_timeout,"),
    ("[site]\ngraceful_timeout = 'soon'\n", r"\[site\] graceful_timeout: expected a number of seconds .*got 'soon'"),
    ("[site]\ngraceful_timeout = -1\n", r"graceful_timeout: expected a number of seconds"),
    ("[site]\ndaemon = 'yes'\n", r"\[site\] daemon: expected true or false, got 'yes'"),
    ("[site]\numask = '8'\n", r"\[site\] umask: expected an octal mask"),
    ("[site]\nuser = 'no-such-user-xyz'\n", r"\[site\] user: expected an existing user name or uid \(no user 'no-such-user-xyz'"),
    ("[site]\ngroup = 'no-such-group-xyz'\n", r"\[site\] group: expected an existing group"),
    ("[site]\nlog_level = 'loud'\n", r"\[site\] log_level: expected one of debug, info"),
    ("[site]\nimport = [1]\n", r"\[site\] import: expected a string or a list of strings, got \[1\]"),
    ("[[server]]\nbind = 'localhost:99999'\n", r"\[\[server\]\] #1 bind: bad bind 'localhost:99999': port 99999 is out of range"),
    ("[[server]]\nbind = '::1:80'\n", r"\[\[server\]\] #1 bind: bad bind '::1:80': an IPv6 address needs brackets"),
    ("[[server]]\nthreads = 0\n", r"\[\[server\]\] #1 threads: expected a whole number of at least 1, got 0"),
    ("[[server]]\nserver = 'bogus'\n", r"\[\[server\]\] #1 server: unknown server 'bogus': expected auto, cheroot,"),
    ("[site]\ngroup = -5\n", r"\[site\] group: expected an existing group name or gid \(no group -5 .*got -5$"),
    ("[site]\ngroup = %d\n" % 2**40, r"\[site\] group: expected an existing group name or gid \(no group 1099511627776 "),
    ("[site]\nuser = true\n", r"\[site\] user: expected an existing user name or uid .*got True$"),
    ("[server]\nbind = '80'\n", r"site\.toml: server: expected an array of tables \(\[\[server\]\]\)"),
    ("[[app]]\nmount = '/x'\n", r"\[\[app\]\] #1 target: missing \(expected \"module:callable\"\)"),
    ("[[app]]\ntarget = 'a:b'\nprotocol = 'http'\n", r"\[\[app\]\] #1 protocol: expected 'auto', 'wsgi' or 'asgi', got 'http'"),
    ("[[app]]\ntarget = 'a:b'\nport = 1\n", r"\[\[app\]\] #1 port: unknown key"),
    ("[plugins]\nreload = 1\n", r"\[plugins\.reload\]: expected a table of settings, got 1"),
    ("[[plugin]]\nsize = 1\n", r"\[\[plugin\]\] #1 path: missing"),
    ("[[plugin]]\npath = 'pkg.Class'\n", r"\[\[plugin\]\] #1 path: expected a dotted path such as \"pkg.module:PluginClass\""),
    ("[site\n", r"site\.toml: not valid TOML: .*\(at line 1, column \d+\)"),
])
def test_a_mistake_is_one_line_naming_file_key_and_expectation(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    message = str(info.value)
    assert re.search(expected, message), message
    assert message.startswith(str(tmp_path / "site.toml") + ": ")
    assert "\n" not in message


def test_a_missing_or_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such configuration file"):
        config.load(str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"cannot read the configuration file"):
        config.load(str(tmp_path))  # a directory


def test_command_line_values_override_the_file_and_lists_replace(tmp_path, monkeypatch):
    site = config.load(write(tmp_path, """
        [site]
        graceful_timeout = 5
        reload = true
        import = ["a", "b"]
        [[server]]
        bind = ["127.0.0.1:1", "127.0.0.1:2"]
        threads = 4
        [[server]]
        bind = "unix:/tmp/x.sock"
        [[app]]
        target = "file_app:app"
    """))
    monkeypatch.chdir(tmp_path)
    config.override(site, {"graceful_timeout": "2.5", "reload": False, "import": ["c"], "umask": "027",
                           "pidfile": "site.pid", "daemon": None})
    assert (site.graceful_timeout, site.reload, site.imports, site.umask) == (2.5, False, ["c"], 0o027)
    assert site.pidfile == str(tmp_path / "site.pid")
    config.command_line_servers(["[::1]:0"], None, None, site)
    assert [(s.binds, s.threads) for s in site.servers] == [(["[::1]:0"], 4)]
    config.command_line_apps(["/x=cli_app:app"], "asgi", site)
    assert [(a.target, a.protocol) for a in site.apps] == [("/x=cli_app:app", "asgi")]


@pytest.mark.parametrize("options, expected", [
    ({"graceful_timeout": "soon"}, r"^--graceful-timeout: expected a number of seconds"),
    ({"umask": "999"}, r"^--umask: expected an octal mask"),
    ({"user": "no-such-user-xyz"}, r"^--user: expected an existing user"),
])
def test_a_bad_command_line_value_names_the_option(options, expected):
    with pytest.raises(ConfigError, match=expected):
        config.override(config.SiteConfig(), options)


def test_numbers_given_on_the_command_line_are_user_and_group_ids():
    site = config.override(config.SiteConfig(), {"user": "0", "group": "0"})  # argparse gives strings
    assert (site.user, site.group) == (0, 0)
    assert config.override(config.SiteConfig(), {"user": "root", "group": "root"}).user == 0


def test_a_relative_unix_bind_in_a_file_is_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    site = config.load(write(tmp_path, """
        [[server]]
        bind = ["unix:run/site.sock", "unix:@abstract", "unix:/abs/x.sock", "127.0.0.1:0"]
    """))
    assert site.servers[0].binds == ["unix:%s" % (tmp_path / "run" / "site.sock"), "unix:@abstract",
                                     "unix:/abs/x.sock", "127.0.0.1:0"]
    config.command_line_servers(["unix:cli.sock"], None, None, site)  # the servers take it from the startup dir
    assert site.servers[0].binds == ["unix:cli.sock"]


def test_an_unknown_server_on_the_command_line_names_the_option():
    with pytest.raises(ConfigError, match=r"^--server: unknown server 'bogus': expected auto, cheroot,"):
        config.command_line_servers(None, "bogus", None, config.SiteConfig())


def test_a_bad_command_line_bind_names_the_option():
    with pytest.raises(ConfigError, match=r"^--bind: bad bind 'nowhere': the port is missing"):
        config.command_line_servers(["127.0.0.1:0", "nowhere"], None, None, config.SiteConfig())


def test_nothing_given_on_the_command_line_keeps_the_file(tmp_path):
    site = config.load(write(tmp_path, "[[server]]\nbind = '127.0.0.1:5'\n[[app]]\ntarget = 'a:b'\n"))
    config.override(site, {"reload": None, "user": None})
    config.command_line_servers(None, None, None, site)
    config.command_line_apps([], None, site)
    assert site.servers[0].binds == ["127.0.0.1:5"] and site.apps[0].target == "a:b"
    assert os.path.isabs(site.source) or site.source.endswith("site.toml")

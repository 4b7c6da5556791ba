"""``wspbus serve --paste FILE.ini[#name]``: Paste Deploy sites, a real Pyramid project, over real HTTP.

The seeds' scenario 1: a site composed by a paste.deploy file (apps, filters, pipelines,
composites), started on the bus, with the file's logging and [server:main] address as pserve
reads them. The factories the test ini files name live in tests/deploy/paste_apps.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import textwrap
import urllib.request

import pytest
from serve_support import PYRAMID, WSPBUS, SteadyClient, ended, get, one_error_line, run, serve

from wspbus.deploy.config import SiteConfig, from_document, override
from wspbus.deploy.paste import prepare

pytest.importorskip("paste.deploy")
pytest.importorskip("plaster_pastedeploy")

PASTE_APPS = os.path.join(os.path.dirname(__file__), "paste_apps")

COMPOSITE_INI = """\
[DEFAULT]
greeting = hello from the defaults

[composite:main]
use = egg:Paste#urlmap
/ = home
/api = api

[app:home]
use = call:paste_fixtures:text_app
text = {home_text}

[pipeline:api]
pipeline = stamp api_app

[filter:stamp]
use = call:paste_fixtures:stamp_filter
header = X-Stamp
value = by the pipeline

[app:api_app]
use = call:paste_fixtures:text_app
text = the api

[filter:stamp_home]
use = call:paste_fixtures:stamp_filter
value = by the filter-app

[filter-app:stamped_home]
use = stamp_home
next = home

[app:broken]
use = call:paste_fixtures:broken_app
db = postgresql://nowhere/site

[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {port}

[loggers]
keys = root, paste_fixtures

[handlers]
keys = file

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers = file

[logger_paste_fixtures]
level = INFO
handlers =
qualname = paste_fixtures

[handler_file]
class = FileHandler
args = ('%(here)s/site.log', 'a')
formatter = plain

[formatter_plain]
format = ini-logging %(name)s %(levelname)s %(message)s
"""


def write_composite_site(directory, home_text="the home page", port=0):
    path = directory / "site.ini"
    path.write_text(COMPOSITE_INI.format(home_text=home_text, port=port))
    return path


def fetch(url, path="/"):
    """(status, headers, body) of a GET."""
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return response.status, response.headers, response.read().decode()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- a real Pyramid project -----------------------------------------------------------------


def test_a_pyramid_project_serves_from_its_development_ini_with_its_logging(spawn, pyramid_installed):
    child, urls = serve(spawn, "--paste", PYRAMID / "development.ini", "--bind", "127.0.0.1:0",
                        env=pyramid_installed)
    assert not urls[0].endswith(":6543")  # --bind overrides [server:main]'s listen
    status, body = get(urls[0], "/")
    assert status == 200
    assert b'"environment": "development"' in body  # the [app:main] settings reached Pyramid
    status, body = get(urls[0], "/hello/bus")
    assert (status, body.startswith(b'{"hello": "bus"')) == (200, True), body
    # development.ini's logging sections: the project's logger at DEBUG, in the ini's format
    child.expect(r"^\S+ \S+ INFO  \[pyramid_site\.views:\d+\]\[\S+\] said hello to bus$")
    child.send(signal.SIGTERM)
    assert child.wait() == 0


@pytest.mark.parametrize("ini, binds", [("development.ini", ["localhost:6543"]), ("production.ini", ["0.0.0.0:6543"])])
def test_the_pyramid_projects_server_section_gives_the_address_and_server_pserve_would_use(ini, binds):
    site = override(SiteConfig(), {"paste": str(PYRAMID / ini)})
    prepare(site)
    assert [(server.binds, server.server) for server in site.servers] == [(binds, "waitress")]


def test_a_site_files_paste_key_is_relative_to_the_file_and_its_servers_win(tmp_path):
    write_composite_site(tmp_path, port=6001)
    site = from_document({"site": {"paste": "site.ini#stamped_home"}, "server": [{"bind": "127.0.0.1:7001"}]},
                         str(tmp_path / "site.toml"))
    assert site.paste == "%s#stamped_home" % (tmp_path / "site.ini")
    prepare(site)
    assert [server.binds for server in site.servers] == [["127.0.0.1:7001"]]  # [[server]], not [server:main]


# -- what Paste Deploy composes ---------------------------------------------------------------


def test_a_composite_of_an_app_and_a_filtered_pipeline_with_the_ini_logging(spawn, tmp_path):
    ini = write_composite_site(tmp_path)
    child, urls = serve(spawn, "--paste", ini, "--bind", "127.0.0.1:0", "--pythonpath", PASTE_APPS)
    status, headers, body = fetch(urls[0], "/")
    assert body == "the home page | greeting=hello from the defaults | here=%s\n" % tmp_path
    assert headers["X-Stamp"] is None
    status, headers, body = fetch(urls[0], "/api/items")
    assert body.startswith("the api | greeting=hello from the defaults")
    assert (headers["X-Stamp"], headers["X-Script-Name"]) == ("by the pipeline", "/api")  # urlmap mounted it
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    log = (tmp_path / "site.log").read_text()  # the FileHandler at %(here)s/site.log
    assert "ini-logging paste_fixtures INFO built 'the home page'" in log
    assert "ini-logging paste_fixtures INFO built 'the api'" in log


def test_hash_name_serves_that_app_of_the_file_and_server_main_gives_the_address(spawn, tmp_path):
    port = free_port()
    ini = write_composite_site(tmp_path, port=port)
    child = spawn([*WSPBUS, "serve", "--paste", "%s#stamped_home" % ini, "--pythonpath", PASTE_APPS])
    url = child.expect(r"^wspbus: serving (\S+)$").group(1)
    assert url == "http://127.0.0.1:%d" % port  # no --bind: [server:main]'s host and port
    child.expect(r"^wspbus: mounted / -> %s#stamped_home \(wsgi\)$" % re.escape(str(ini)))
    status, headers, body = fetch(url, "/")
    assert body.startswith("the home page")
    assert headers["X-Stamp"] == "by the filter-app"
    child.send(signal.SIGTERM)
    assert child.wait() == 0


# -- with the other serve options --------------------------------------------------------------


def test_reload_watches_the_ini_file_itself(spawn, tmp_path):
    ini = write_composite_site(tmp_path, home_text="before the edit")
    child, urls = serve(spawn, "--paste", ini, "--bind", "127.0.0.1:0", "--pythonpath", PASTE_APPS, "--reload")
    with SteadyClient(urls[0]) as client:
        client.wait_for(b"before the edit")
        write_composite_site(tmp_path, home_text="after the edit")
        client.wait_for(b"after the edit")
    assert client.failures == [], client.failures[:5]


def test_daemon_with_a_pid_file_serves_the_ini_and_stops(tmp_path):
    ini = write_composite_site(tmp_path)
    pidfile, log = tmp_path / "site.pid", tmp_path / "error.log"
    launcher = run("serve", "--paste", ini, "--bind", "127.0.0.1:0", "--pythonpath", PASTE_APPS,
                   "--daemon", "--pidfile", pidfile, "--log-file", log)
    assert launcher.returncode == 0, launcher.stderr
    pid = int(pidfile.read_text())
    try:
        status = run("status", "--pidfile", pidfile)
        url = re.search(r"^bind: (\S+)$", status.stdout, re.M).group(1)
        assert get(url, "/api/x")[1].startswith(b"the api")
        assert run("stop", "--pidfile", pidfile).returncode == 0
        assert ended(pid)
    finally:
        if not ended(pid):
            os.kill(pid, signal.SIGKILL)


# -- mistakes: one line, status 78 --------------------------------------------------------------


@pytest.mark.parametrize("target, extra, expected", [
    ("missing.ini", [], r"missing\.ini: no such Paste Deploy file \(expected FILE\.ini\[#name\]\)"),
    ("site.ini#nowhere", [], r"site\.ini: no app named 'nowhere' \(expected a section \[app:nowhere\], "
                             r"\[pipeline:nowhere\], \[composite:nowhere\] or \[filter-app:nowhere\]\)"),
    ("site.ini#broken", [], r"site\.ini#broken: the app does not load: RuntimeError: the database URL "
                            r"'postgresql://nowhere/site' is not reachable \(at \S+paste_fixtures\.py:\d+\)"),
    ("bad.ini", [], r"bad\.ini: not a valid ini file: line 1: '\[app:main' \(expected \[section\] "
                   r"headers and 'key = value' lines\)$"),
    ("site.ini", ["paste_fixtures:text_app"], r"--paste serves the ini file's app; expected no APP arguments"),
    ("badport.ini", [], r"badport\.ini: \[server:main\] host/port: bad bind '127\.0\.0\.1:http'"),
    ("badvar.ini", [], r"badvar\.ini: not a valid ini file: Bad value substitution: option 'port' in section "
                       r"'server:main' contains an interpolation key 'nowhere' which is not a valid option name"),
    ("badlog.ini", [], r"badlog\.ini: the logging sections do not configure logging: ModuleNotFoundError: "
                       r"No module named 'NoSuchHandler'$"),
])
def test_a_paste_mistake_is_one_line_and_status_78(tmp_path, target, extra, expected):
    write_composite_site(tmp_path)
    (tmp_path / "bad.ini").write_text("[app:main\nuse = call:paste_fixtures:text_app\n")
    (tmp_path / "badport.ini").write_text("[server:main]\nhost = 127.0.0.1\nport = http\n")
    (tmp_path / "badvar.ini").write_text("[server:main]\nhost = 127.0.0.1\nport = %(nowhere)s\n")
    (tmp_path / "badlog.ini").write_text("[app:main]\nuse = call:paste_fixtures:text_app\ntext = x\n"
                                         "[loggers]\nkeys = root\n[handlers]\nkeys = h\n[formatters]\nkeys =\n"
                                         "[logger_root]\nhandlers = h\n[handler_h]\nclass = NoSuchHandler\nargs = ()\n")
    result = run("serve", "--paste", tmp_path / target, "--pythonpath", PASTE_APPS, *extra)
    assert result.returncode == 78, result.stderr
    assert re.search(expected, one_error_line(result.stderr)), result.stderr

"""[[server]] request head limits: read from the site file, kept across command-line overrides,
and in force in the server `wspbus serve` runs (issue 11, item 5)."""

from __future__ import annotations

import socket

import pytest

from serve_support import WSPBUS, banner_port
from wspbus.deploy import config
from wspbus.deploy.config import ConfigError
from wspbus.servers.request_head import HeadLimits

def write(tmp_path, text: str) -> str:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return str(path)


LIMITS = """
[[server]]
bind = "127.0.0.1:0"
max_request_line = 100
max_header_field = 200
max_headers = 3
head_timeout = 2.5
"""


def test_limits_are_read_and_survive_command_line_overrides(tmp_path):
    site = config.load(write(tmp_path, LIMITS))
    assert site.servers[0].limits == HeadLimits(100, 200, 3, 2.5)
    config.command_line_servers(None, "waitress", 4, site)
    assert site.servers[0].limits == HeadLimits(100, 200, 3, 2.5)
    assert config.load(write(tmp_path, "[[server]]\n")).servers[0].limits == HeadLimits()


@pytest.mark.parametrize("text, expected", [
    ("[[server]]\nmax_headers = 0\n", r"\[\[server\]\] #1 max_headers: expected a whole number of at least 1, got 0"),
    ("[[server]]\nhead_timeout = 0\n", r"\[\[server\]\] #1 head_timeout: expected a number of seconds above 0"),
])
def test_a_bad_limit_is_one_line(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        config.load(write(tmp_path, text))


def test_the_served_site_refuses_a_head_past_the_configured_limit(spawn, tmp_path):
    (tmp_path / "app.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'ok']\n")
    site = write(tmp_path, LIMITS)
    child = spawn([*WSPBUS, "serve", "--config", site, "app:app"], cwd=tmp_path)
    port = banner_port(child.expect(r"^wspbus: serving (\S+)$").group(1))

    def status(fields: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + fields + b"\r\n")
            return sock.recv(100).split(b" ")[1]

    assert status(b"") == b"200"
    assert status(b"X-A: 1\r\nX-B: 2\r\n") == b"431"  # 4 fields, 3 allowed

"""The access log: Combined Log Format lines on 'wspbus.access', from real requests to each server."""

from __future__ import annotations

import http.client
import logging
import re

import pytest

from serving import SERVER_PROTOCOLS, hello_app
from wspbus.servers import HTTPServer
from wspbus.servers.access import combined_line

COMBINED = re.compile(
    r'^(?P<host>\S+) - (?P<user>\S+) \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$')


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines():
    logger = logging.getLogger("wspbus.access")
    recorder = Recorder()
    logger.addHandler(recorder)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield recorder.lines
    logger.removeHandler(recorder)
    logger.setLevel(level)


def request(address, path, headers):
    conn = http.client.HTTPConnection(*address, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("server", sorted(SERVER_PROTOCOLS))
def test_one_combined_line_per_request(bus, server, access_lines):
    plugin = HTTPServer(bus, hello_app(server), "127.0.0.1:0", server=server,
                        protocol=SERVER_PROTOCOLS[server])
    plugin.subscribe()
    bus.start()
    headers = {"Referer": "http://ref.example/", "User-Agent": "probe/1.0"}
    status, body = request(plugin.address, "/page?q=1", headers)
    bus.stop()  # the line is written by the time the server has finished the request
    assert status == 200
    [line] = access_lines
    fields = COMBINED.match(line)
    assert fields, line
    assert fields["host"] == "127.0.0.1" and fields["user"] == "-"
    assert fields["request"] == "GET /page?q=1 HTTP/1.1"
    assert (fields["status"], int(fields["size"])) == ("200", len(body))
    assert (fields["referer"], fields["agent"]) == ("http://ref.example/", "probe/1.0")


def test_access_log_off_writes_nothing(bus, access_lines):
    plugin = HTTPServer(bus, hello_app("cheroot"), "127.0.0.1:0", access_log=False)
    plugin.subscribe()
    bus.start()
    assert request(plugin.address, "/", {})[0] == 200
    bus.stop()
    assert access_lines == []


def test_logger_above_info_writes_nothing(bus, access_lines):
    logging.getLogger("wspbus.access").setLevel(logging.WARNING)
    plugin = HTTPServer(bus, hello_app("cheroot"), "127.0.0.1:0")
    plugin.subscribe()
    bus.start()
    assert request(plugin.address, "/", {})[0] == 200
    bus.stop()
    assert access_lines == []


def test_quotes_and_control_characters_cannot_break_a_line():
    line = combined_line("::1", "", 'GET /"x"\n HTTP/1.1', 404, 0, "", 'evil" agent', when=0)
    assert "\n" not in line
    assert '"GET /\\"x\\"\\n HTTP/1.1" 404 - "-" "evil\\" agent"' in line

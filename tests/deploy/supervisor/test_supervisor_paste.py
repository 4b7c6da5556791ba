"""``--paste FILE.ini --workers N``: each worker loads the ini file itself; the supervisor only binds its address."""

from __future__ import annotations

import os
import re
import socket
import textwrap

from serve_support import PYRAMID, WSPBUS

#: Run at the start of every interpreter that has it on its path: says which process imports Pyramid
#: (the project's package itself is imported by importlib, which raises no 'import' audit event).
IMPORT_WITNESS = """
import os
import sys

def _witness(event, args):
    if event == "import" and args[0].partition(".")[0] == "pyramid" and not _witness.seen:
        _witness.seen = True
        os.write(1, b"pyramid imported in %d\\n" % os.getpid())  # one write: the processes share stdout

_witness.seen = False
sys.addaudithook(_witness)
"""


def test_each_worker_loads_the_paste_file_and_its_server_section_gives_the_supervisors_binds(site, pyramid_installed):
    port = _free_port()
    ini = site.app_dir / "development.ini"
    text = (PYRAMID / "development.ini").read_text()
    text = text.replace("listen = localhost:6543", "host = 127.0.0.1\nport = %d" % port)
    text = text.replace("format = %(asctime)s", "format = [pid %(process)d] %(asctime)s")
    ini.write_text(text)
    witness = site.run_dir / "witness"
    witness.mkdir()
    (witness / "sitecustomize.py").write_text(textwrap.dedent(IMPORT_WITNESS))
    path = os.pathsep.join([str(witness), pyramid_installed["PYTHONPATH"]])
    child = site.spawn([*WSPBUS, "serve", "--workers", "2", "--paste", ini, "--pidfile", site.pidfile],
                       env={**site.env, "PYTHONPATH": path}, cwd=site.app_dir)
    site.child = child
    site.url = child.expect(r"^wspbus: serving (\S+)$").group(1)
    assert site.url == "http://127.0.0.1:%d" % port  # [server:main] host and port, bound by the supervisor
    child.expect(r"^wspbus: mounted / -> %s#main \(wsgi\)$" % re.escape(str(ini)))
    workers = set(site.worker_pids())
    assert len(workers) == 2 and child.pid not in workers
    importers = {int(child.expect(r"^pyramid imported in (\d+)").group(1)) for _ in range(2)}
    assert importers == workers  # the supervisor never imports the app
    answered = set()
    for number in range(200):  # on new connections, until both workers answered
        status, body = site.get("/hello/%d" % number)
        assert status == 200 and body.startswith('{"hello": "%d"' % number), body
        line = r"^\[pid (\d+)\] \S+ \S+ INFO  \[pyramid_site\.views:\d+\]\[\S+\] said hello to %d$" % number
        answered.add(int(child.expect(line).group(1)))  # in the ini's own log format: the worker read it
        if answered == workers:
            break
    assert answered == workers


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

"""`wspbus serve --workers N`: a supervisor and N fresh worker interpreters serving one site."""

from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import textwrap

import pytest

from serve_support import one_error_line
from supervised import answered_by

from support import DEADLINE


def test_n_workers_serve_the_site_each_in_its_own_process(site):
    child = site.serve(workers=3)
    pids = answered_by(site, 3)
    assert len(pids) == 3 and child.pid not in pids  # the supervisor serves nothing itself
    assert sorted(pids) == sorted(site.worker_pids())
    child.send(signal.SIGTERM)
    assert child.wait() == 0


def test_the_supervisor_never_imports_the_site(site):
    site.write_app(extra="""
        os.write(1, b"site_app imported in %d\\n" % os.getpid())  # one write: the workers share stdout
    """)
    child = site.serve(workers=2)
    importers = {int(child.expect(r"site_app imported in (\d+)").group(1)) for _ in range(2)}
    assert child.pid not in importers and importers == set(site.worker_pids())


def test_a_workers_start_and_stop_listeners_run_in_that_worker(site):
    (site.app_dir / "site_plugins.py").write_text(textwrap.dedent("""
        import os
        import wspbus

        @wspbus.bus.subscribe("start")
        def opened():
            os.write(1, b"start listener in %d\\n" % os.getpid())  # one write: the workers share stdout

        @wspbus.bus.subscribe("stop")
        def closed():
            os.write(1, b"stop listener in %d\\n" % os.getpid())
    """))
    child = site.serve("--import", "site_plugins", workers=2)
    workers = set(site.worker_pids())
    started = {int(child.expect(r"start listener in (\d+)").group(1)) for _ in range(2)}
    assert started == workers
    child.send(signal.SIGTERM)
    stopped = {int(child.expect(r"stop listener in (\d+)").group(1)) for _ in range(2)}
    assert stopped == workers
    assert child.wait() == 0


def test_each_worker_log_line_names_its_pid(site):
    child = site.serve(workers=2)
    for pid in site.worker_pids():
        child.expect(r"INFO \[worker %d\] Bus STARTED" % pid)


def test_a_worker_that_cannot_start_ends_the_command_with_its_error_and_69(site):
    (site.app_dir / "failing.py").write_text(textwrap.dedent("""
        import wspbus
        wspbus.bus.subscribe("start", lambda: 1 / 0)
    """))
    result = site.run("serve", "--workers", "2", "--chdir", site.app_dir, "-b", "127.0.0.1:0",
                      "--import", "failing", "site_app:app", timeout=30)
    assert result.returncode == 69, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("wspbus: error:")]
    assert errors == ["wspbus: error: the site could not start: division by zero"]
    assert result.stderr.splitlines()[-1] == errors[0]
    assert "ZeroDivisionError" in result.stderr  # a bug in code keeps its traceback in the (worker's) log
    assert "Generation" not in result.stderr and "replac" not in result.stderr  # no restart loop


def test_an_app_that_does_not_import_is_a_configuration_error_78(site):
    site.write_app(extra="raise RuntimeError('no database URL')")
    result = site.run("serve", "--workers", "1", "--chdir", site.app_dir, "-b", "127.0.0.1:0", "site_app:app",
                      timeout=30)
    assert result.returncode == 78, result.stderr
    assert re.match(r"wspbus: error: command line: app 'site_app:app': importing 'site_app' failed: "
                    r"RuntimeError: no database URL", one_error_line(result.stderr))


def test_a_port_in_use_fails_in_the_supervisor_before_any_worker_starts(site):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = site.run("serve", "--workers", "2", "--chdir", site.app_dir, "-b", "127.0.0.1:%d" % port,
                          "site_app:app", timeout=30)
    assert result.returncode == 69, result.stderr
    assert one_error_line(result.stderr) == (
        "wspbus: error: the site could not start: cannot bind 127.0.0.1:%d: address already in use" % port)
    assert "[worker" not in result.stderr


def test_status_json_lists_the_workers_with_their_counts(site):
    child = site.serve(workers=2)
    for _ in range(10):
        site.get()
    result = site.run("status", "--json", "--pidfile", site.pidfile)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["state"] == "STARTED" and record["pid"] == child.pid and record["generation"] == 1
    workers = record["workers"]
    assert len(workers) == 2
    for worker in workers:
        assert set(worker) >= {"pid", "generation", "state", "age", "requests", "rss"}
        assert worker["state"] == "serving" and worker["generation"] == 1
        assert worker["age"] > 0 and worker["rss"] > 5_000_000
    assert sum(worker["requests"] for worker in workers) == 10
    text = site.run("status", "--pidfile", site.pidfile).stdout
    assert re.search(r"^worker %d: serving, generation 1" % workers[0]["pid"], text, re.M)
    kept = json.loads((site.run_dir / "site.status.json").read_text())  # as of the last change
    assert kept["generation"] == 1 and sorted(w["pid"] for w in kept["workers"]) == sorted(w["pid"] for w in workers)


def test_one_error_log_and_one_access_log_for_all_workers_with_whole_lines(site):
    error_log, access_log = site.run_dir / "error.log", site.run_dir / "access.log"
    child = site.serve("--log-file", error_log, "--access-log", access_log, workers=3)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert all(status == 200 for status, _ in pool.map(lambda n: site.get("/page/%d" % n), range(300)))
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    lines = access_log.read_text().splitlines()
    torn = [line for line in lines if not re.fullmatch(r'\S+ - - \[[^]]+\] "GET /page/\d+ HTTP/1\.1" 200 \d+ "-" "[^"]*"', line)]
    assert len(lines) == 300 and not torn, (len(lines), torn)
    assert sorted(int(re.search(r"/page/(\d+)", line).group(1)) for line in lines) == list(range(300))
    errors = error_log.read_text().splitlines()
    workers = {int(pid) for pid in re.findall(r"^\S+ INFO \[worker (\d+)\] Bus STARTED$", "\n".join(errors), re.M)}
    assert len(workers) == 3, errors
    assert not [line for line in errors if not re.match(r"\S+ [A-Z]+ ", line)], errors  # whole lines, none torn


def test_the_number_of_workers_may_come_from_the_site_file(site):
    (site.app_dir / "site.toml").write_text("[site]\nworkers = 3\n")
    site.serve("--config", site.app_dir / "site.toml", workers=None)
    assert len(site.worker_pids()) == 3


def test_a_bad_number_of_workers_is_a_configuration_error(site):
    result = site.run("serve", "--workers", "0", "--chdir", site.app_dir, "site_app:app")
    assert result.returncode == 78
    assert one_error_line(result.stderr) == "wspbus: error: --workers: expected a whole number of at least 1, got '0'"


@pytest.mark.parametrize("server", ["cheroot", "waitress"])
def test_a_worker_with_every_thread_busy_leaves_new_connections_to_a_worker_with_a_free_one(site, server):
    # One thread each: the first slow request fills its worker. The second must start at once on
    # the other worker, not wait in the first one's queue while the other idles. The kernel hands a
    # connection to whichever worker is quickest to accept, and the worker that just accepted, its
    # connection loop idle, often is quickest: three rounds.
    site.serve("--threads", "1", "--server", server, workers=2)
    for _ in range(3):
        pool = concurrent.futures.ThreadPoolExecutor(2)
        first = pool.submit(site.get, "/slow?1")
        in_first = int(site.child.expect(r"^slow request in (\d+)").group(1))
        second = pool.submit(site.get, "/slow?1")
        in_second = int(site.child.expect(r"^slow request in (\d+)").group(1))
        assert in_second != in_first, "the second request waited for %d's only thread" % in_first
        assert first.result(DEADLINE)[0] == second.result(DEADLINE)[0] == 200
        pool.shutdown()

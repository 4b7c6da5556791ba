"""Rolling reloads: a new generation starts beside the old one, which stops only once it serves."""

from __future__ import annotations

import concurrent.futures
import re
import signal

from serve_support import SteadyClient
from supervised import KeepAliveClient, tagged_pids, wait_gone


def test_five_reloads_serve_fresh_code_with_no_failed_request(site):
    site.serve(workers=2)
    with KeepAliveClient(site.url) as kept, SteadyClient(site.url) as fresh:
        kept.wait_for("v1")
        for number in range(2, 7):
            site.write_app(version="v%d" % number)
            result = site.run("reload", "--pidfile", site.pidfile)
            assert result.returncode == 0, result.stderr
            assert re.match(r"wspbus: reloaded: generation %d serves \(pids \d+, \d+\)" % number, result.stdout)
            kept.wait_for("v%d" % number)
            fresh.wait_for(b"v%d" % number)
    assert kept.failures == [] and fresh.failures == [], (kept.failures[:3], fresh.failures[:3])
    assert len(site.worker_pids()) == 2
    print("5 reloads: keep-alive %d requests on %d connections, longest gap %.3f s; new connections %d requests, "
          "longest gap %.3f s" % (len(kept.bodies), kept.connections, kept.longest_gap, len(fresh.bodies),
                                  fresh.longest_gap))


def test_a_worker_retiring_from_granian_answers_connection_close_first(site):
    """granian closes a connection whose response says Connection: close (tests/servers
    test_keep_alive.py), so a retiring worker on it answers so for a while, instead of closing its
    kept-alive connections under a client's next request."""
    child = site.serve("--server", "granian", workers=1)
    site.write_app(version="v2")
    result = site.run("reload", "--pidfile", site.pidfile)
    assert result.returncode == 0, result.stderr
    child.expect(r"Retiring: answering with Connection: close for 0\.5 s, then stopping")


def test_a_reload_into_code_that_fails_to_import_keeps_the_old_code_serving(site):
    site.serve(workers=2)
    old = sorted(site.worker_pids())
    with KeepAliveClient(site.url) as kept:
        kept.wait_for("v1")
        site.write_app(version="v2", extra="raise ImportError('no module named psycopg9')")
        result = site.run("reload", "--pidfile", site.pidfile)
        assert result.returncode == 1
        source = site.app_dir / "site_app.py"
        line = source.read_text().splitlines().index("raise ImportError('no module named psycopg9')") + 1
        assert result.stderr.strip() == (
            "wspbus: reload failed, the old workers keep serving: command line: app 'site_app:app': importing "
            "'site_app' failed: ImportError: no module named psycopg9 (at %s:%d)" % (source, line))
        site.child.expect(r"ERROR Reload failed: generation 2 could not start: .*psycopg9.*; generation 1 keeps serving")
        served_before = len(kept.bodies)
        kept.wait_for("v1")
    assert len(kept.bodies) > served_before and kept.failures == []
    assert sorted(site.worker_pids()) == old
    assert site.status()["generation"] == 1
    site.write_app(version="v3")
    assert site.run("reload", "--pidfile", site.pidfile).returncode == 0  # a fixed deploy goes through
    site.get_until("v3 ")


def test_sighup_reloads_too(site):
    child = site.serve(workers=1)
    site.write_app(version="v2")
    child.send(signal.SIGHUP)
    child.expect(r"Generation 2 serves")
    site.get_until("v2 ")


def test_a_burst_of_reloads_coalesces_and_ends_on_the_newest_code(site):
    from wspbus.deploy.supervisor import client  # what `wspbus reload` asks, without 11 interpreters

    child = site.serve(workers=2)
    with KeepAliveClient(site.url) as kept, concurrent.futures.ThreadPoolExecutor(11) as pool:
        kept.wait_for("v1")
        site.write_app(version="v2")
        answers = [pool.submit(client.reload, str(site.pidfile)) for _ in range(10)]
        site.write_app(version="v3")  # saved while the burst is under way: the last reload must bring it
        answers.append(pool.submit(client.reload, str(site.pidfile)))
        generations = {answer.result(60)["generation"] for answer in answers}  # each one succeeded
        kept.wait_for("v3")
    assert len(generations) <= 3  # 11 requests, at most 3 generations: merged, not queued one by one
    assert kept.failures == []
    site.get_until("v3 ")
    child.send(signal.SIGTERM)
    assert child.wait() == 0


def test_signals_right_after_a_reload_leave_a_serving_site_or_an_exited_one(site):
    child = site.serve(workers=2)
    site.write_app(version="v2")
    child.send(signal.SIGHUP)
    child.send(signal.SIGHUP)  # a second one while the first reload starts: merged, not fatal
    assert site.run("reload", "--pidfile", site.pidfile).returncode == 0  # returns once the newest serves
    site.get_until("v2 ")
    generation = site.status()["generation"]
    child.send(signal.SIGHUP)
    child.expect(r"Reload: starting generation %d" % (generation + 1))
    child.send(signal.SIGTERM)  # while the new generation starts
    assert child.wait() == 0
    wait_gone(tagged_pids(site.tag))


ASGI_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"%s"})
'''


def test_reloads_of_an_asgi_site_fail_no_request_of_either_client(site):
    """The ASGI default server (uvicorn) in retiring workers: a connection accepted in the instant
    the server stops is answered, not left hanging until the client gives up."""
    (site.app_dir / "asgi_app.py").write_text(ASGI_APP % "v1")
    site.serve(app="asgi_app:app", workers=1)
    with KeepAliveClient(site.url) as kept, SteadyClient(site.url) as fresh:
        kept.wait_for("v1")
        for number in range(2, 5):
            temporary = site.app_dir / "asgi_app.py.tmp"
            temporary.write_text(ASGI_APP % ("v%d" % number))
            temporary.replace(site.app_dir / "asgi_app.py")
            result = site.run("reload", "--pidfile", site.pidfile)
            assert result.returncode == 0, result.stderr
            kept.wait_for("v%d" % number)
            fresh.wait_for(b"v%d" % number)
    assert kept.failures == [] and fresh.failures == [], (kept.failures[:3], fresh.failures[:3])
    assert fresh.longest_gap < 0.5 and kept.longest_gap < 0.5, (fresh.longest_gap, kept.longest_gap)

"""Recycling: a worker past --max-requests or --max-worker-memory is replaced, the new one ready first."""

from __future__ import annotations

import re

from serve_support import SteadyClient, one_error_line
from supervised import KeepAliveClient, wait_gone


def test_max_requests_replaces_each_worker_after_its_share_with_no_failed_request(site):
    child = site.serve("--max-requests", "50", "--max-requests-jitter", "10", workers=2)
    first = set(site.worker_pids())
    renewed: dict[int, int] = {}  # worker -> the requests it served; a replacement may come round first
    with KeepAliveClient(site.url) as kept, SteadyClient(site.url) as fresh:
        while not first <= renewed.keys():
            assert len(renewed) < 10, renewed
            match = child.expect(r"worker (\d+) \(generation 1\) is replaced because it served (\d+) requests "
                                 r"\(--max-requests\); its replacement starts first", timeout=30)
            renewed[int(match.group(1))] = int(match.group(2))
        wait_gone(first)
    assert all(50 <= count <= 60 for count in renewed.values()), renewed
    assert kept.failures == [] and fresh.failures == [], (kept.failures[:3], fresh.failures[:3])
    assert not first & set(site.worker_pids())


def test_max_worker_memory_replaces_a_worker_that_grew_past_it(site):
    child = site.serve("--max-worker-memory", "60", workers=1)
    leaky = site.worker_pids()[0]
    assert site.get("/grow")[0] == 200
    for _ in range(20):  # the worker looks at its size every 16 requests
        site.get()
    match = child.expect(r"worker %d \(generation 1\) is replaced because its resident size is (\d+) MB "
                         r"\(--max-worker-memory 60\)" % leaky)
    assert int(match.group(1)) > 60
    wait_gone([leaky])
    assert re.match(r"v1 \d+", site.get()[1]) and leaky not in site.worker_pids()


def test_the_bounds_may_come_from_the_site_file(site):
    (site.app_dir / "site.toml").write_text("[site]\nmax_requests = 20\n")
    child = site.serve("--config", site.app_dir / "site.toml", workers=1)
    first = site.worker_pids()[0]
    for _ in range(20):
        site.get()
    child.expect(r"worker %d \(generation 1\) is replaced because it served 20 requests \(--max-requests\)" % first)
    wait_gone([first])


def test_a_bad_bound_in_the_site_file_is_a_configuration_error(site):
    (site.app_dir / "site.toml").write_text('[site]\nworker_timeout = "soon"\n')
    result = site.run("serve", "--config", site.app_dir / "site.toml", "site_app:app")
    assert result.returncode == 78
    assert one_error_line(result.stderr) == ("wspbus: error: %s: [site] worker_timeout: expected a number of seconds "
                                              "above 0 (inf for no limit), got 'soon'" % (site.app_dir / "site.toml"))

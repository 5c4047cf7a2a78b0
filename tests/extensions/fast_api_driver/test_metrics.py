"""GET /metrics: the executor's stats and the driver's HTTP counters in Prometheus text format, parsed back."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import pytest

from rvai_sdk.drivers.metrics import rebucket as _rebucket
from rvai_sdk.runtime import init
from tests.conftest import BatchRemember, single
from tests.extensions.fast_api_driver._pipelines import http_pipeline
from tests.extensions.fast_api_driver.test_fast_api_driver import body, serving

pytestmark = pytest.mark.timeout(60)

parser = pytest.importorskip("prometheus_client.parser")


def scrape(url: str, **kwargs: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics`` as (name, sorted labels) → value; checks the histograms are consistent."""
    response = httpx.get(f"{url}/metrics", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in parser.text_string_to_metric_families(response.text):
        if family.type == "histogram":
            check_histogram(family)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def check_histogram(family: Any) -> None:
    """Per series: cumulative buckets never decrease and ``+Inf`` equals ``_count``."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[str, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in family.samples:
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        if sample.name.endswith("_bucket"):
            series.setdefault(labels, []).append((sample.labels["le"], sample.value))
        elif sample.name.endswith("_count"):
            counts[labels] = sample.value
    for labels, buckets in series.items():
        values = [value for _, value in buckets]
        assert values == sorted(values), (family.name, labels, buckets)
        assert buckets[-1][0] == "+Inf" and buckets[-1][1] == counts[labels], (family.name, labels)


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_rebucketing_is_cumulative_and_never_undercounts_an_edge() -> None:
    assert _rebucket([(0.0009, 2), (0.001, 1), (0.003, 4), (float("inf"), 1)], (0.001, 0.005)) == [
        ("0.001", 3.0),
        ("0.005", 7.0),
        ("+Inf", 8.0),
    ]


@pytest.mark.parametrize("runtime_name", ["debug", "local"])
def test_metrics_count_requests_by_outcome_per_cell_and_per_route(runtime_name: str) -> None:
    with init(runtime_name) as rt, serving(rt, http_pipeline()) as (proc, handle, url):
        for i, sid in enumerate(["a", "b"]):
            assert httpx.post(f"{url}/predict", json=body(i, sid=sid), timeout=30).status_code == 200
        assert httpx.post(f"{url}/predict", json=body(-1, sid="b"), timeout=30).status_code == 500
        # "count" and "info" are parallel to "check": they still run for the request that "check" failed,
        # before its error is answered (docs/concepts/execution.md, "Failures").
        assert httpx.post(f"{url}/predict", json=body(2, sid="a"), timeout=30).status_code == 200
        assert httpx.post(f"{url}/predict", json={"inputs": {"x": "nope"}}, timeout=30).status_code == 422
        samples = scrape(url)
        calls = {ref: cell["calls"] for ref, cell in proc.stats()["cells"].items()}

    p = {"pipeline": "http-test"}
    assert value(samples, "rvai_inference_up", **p) == 1
    assert value(samples, "rvai_requests_total", outcome="succeeded", **p) == 3
    assert value(samples, "rvai_requests_total", outcome="failed", **p) == 1
    assert value(samples, "rvai_requests_in_flight", **p) == 0
    assert value(samples, "rvai_live_sids", **p) == 2
    assert calls["check"] == 4 and calls["count"] == 4 and calls["info"] == 4
    assert value(samples, "rvai_cell_failures_total", cell="check", **p) == 1
    for cell in ("count", "check", "info"):
        assert value(samples, "rvai_cell_calls_total", cell=cell, **p) == calls[cell]
        assert value(samples, "rvai_cell_queue_depth", cell=cell, **p) == 0
        # unbatched cells: every call has one request
        assert value(samples, "rvai_cell_batch_size_bucket", cell=cell, le="1.0", **p) == calls[cell]
        # timings of very fast cells are sampled (1 call in 16), never over-counted
        assert value(samples, "rvai_cell_call_seconds_count", cell=cell, **p) <= calls[cell]
    assert value(samples, "rvai_request_latency_seconds_count", **p) <= 3
    route = {"method": "POST", "route": "/predict", **p}
    assert value(samples, "rvai_http_requests_total", status="200", **route) == 3
    assert value(samples, "rvai_http_requests_total", status="500", **route) == 1
    assert value(samples, "rvai_http_requests_total", status="422", **route) == 1
    assert value(samples, "rvai_http_requests_total", method="GET", route="/ready", status="200", **p) >= 1


def test_batch_size_histogram_adds_up_to_the_items_of_a_batched_cell() -> None:
    with init("debug") as rt, serving(rt, single(BatchRemember, name="batched")) as (proc, handle, url):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: httpx.post(f"{url}/predict", json={"inputs": {"x": i}, "sid": f"s{i}"}, timeout=30).status_code, range(20, 36)))  # 13 fails by design
        assert codes == [200] * 16
        samples = scrape(url)
    p = {"pipeline": "batched", "cell": "c0"}
    calls = value(samples, "rvai_cell_calls_total", **p)
    assert value(samples, "rvai_cell_items_total", **p) == 16
    assert value(samples, "rvai_cell_batch_size_sum", **p) == 16
    assert value(samples, "rvai_cell_batch_size_count", **p) == calls
    assert value(samples, "rvai_cell_batch_size_bucket", le="8.0", **p) == calls  # max_batch_size is 8


def test_metrics_need_the_api_key_like_every_route_but_health() -> None:
    with init("debug") as rt, serving(rt, http_pipeline(), {"api_key": "s3cret"}) as (proc, handle, url):
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
        samples = scrape(url, headers={"Authorization": "Bearer s3cret"})
    assert value(samples, "rvai_http_requests_total", method="GET", route="/metrics", status="401", pipeline="http-test") == 1


def test_a_listen_port_parameter_overrides_the_runtime_allocated_port() -> None:
    from tests._servers import free_port

    port = free_port()
    with init("debug") as rt, serving(rt, http_pipeline(), {"listen_port": port}) as (proc, handle, url):
        assert handle.get_service("http")["port"] == port
        assert url.endswith(f":{port}")
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200


def test_metrics_time_each_request_by_route_and_add_the_process_metrics() -> None:
    with init("debug") as rt, serving(rt, http_pipeline()) as (proc, handle, url):
        for i in range(3):
            assert httpx.post(f"{url}/predict", json=body(i), timeout=30).status_code == 200
        assert httpx.get(f"{url}/no-such-page", timeout=30).status_code == 404
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        samples = scrape(url)
    p = {"pipeline": "http-test"}
    duration = "rvai_http_request_duration_seconds"
    assert value(samples, f"{duration}_count", method="POST", route="/predict", **p) == 3
    assert value(samples, f"{duration}_bucket", method="POST", route="/predict", le="+Inf", **p) == 3
    assert value(samples, f"{duration}_sum", method="POST", route="/predict", **p) > 0
    assert value(samples, f"{duration}_count", method="GET", route="other", **p) == 1  # unknown paths share a label
    assert value(samples, f"{duration}_count", method="GET", route="/health", **p) == 1
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_open_fds") > 0
    assert value(samples, "process_start_time_seconds") > 0

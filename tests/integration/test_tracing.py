"""OpenTelemetry tracing: one trace per request or frame, across the driver, the transport and the cells, on every runtime.

Every process (this one, the inference process, driver processes, Ray replicas) exports
its spans with the ``file`` exporter into one folder (``spans-PID.jsonl`` each), which
the tests read back: what a collector would receive from all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.runtime import Inference, Runtime, init
from rvai_sdk.tracing import configure_tracing, read_spans, shutdown_tracing, tracing_enabled
from rvai_sdk.types import Integer
from tests.conftest import AddOne, BatchRemember, Double, chain_pipeline, require_extra, single

pytestmark = pytest.mark.timeout(180)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans_dir(tmp_path: Path) -> Iterator[Path]:
    """Tracing on, every process exporting to ``tmp_path/spans``; off again after the test."""
    require_extra("opentelemetry.sdk.trace")
    folder = tmp_path / "spans"
    configure_tracing("file", path=folder)
    try:
        yield folder
    finally:
        shutdown_tracing()


def spans_until(folder: Path, condition: Callable[[list[dict[str, Any]]], Any], what: str, timeout: float = 60.0) -> Any:
    """Read the spans of every process until ``condition(spans)`` is truthy (spans arrive as processes end them)."""
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = read_spans(folder)
        found = condition(spans)
        if found:
            return found
        time.sleep(0.05)
    names = sorted((s["name"], s["resource"]["attributes"].get("rvai.process")) for s in spans)
    raise AssertionError(f"timed out waiting for {what}; spans so far: {names}")


def hex_id(value: str | None) -> str | None:
    """A span or trace id as the JSON form writes it (``0x...``), without the prefix."""
    return None if value is None else value[2:] if value.startswith("0x") else value


def trace_of(spans: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [s for s in spans if hex_id(s["context"]["trace_id"]) == trace_id]


def by_name(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def process_of(span: dict[str, Any]) -> str:
    return str(span["resource"]["attributes"]["rvai.process"])


def parent_of(span: dict[str, Any], spans: list[dict[str, Any]]) -> dict[str, Any] | None:
    parent = hex_id(span["parent_id"])
    for other in spans:
        if hex_id(other["context"]["span_id"]) == parent:
            return other
    return None


def chain(spans: list[dict[str, Any]], leaf: dict[str, Any]) -> list[str]:
    """Span names from ``leaf`` up to its root, following parent ids."""
    names = [leaf["name"]]
    span: dict[str, Any] | None = leaf
    for _ in range(20):
        span = parent_of(span, spans) if span is not None else None
        if span is None:
            break
        names.append(span["name"])
    return names


def complete_http_trace(trace_id: str | None = None) -> Callable[[list[dict[str, Any]]], Any]:
    """A condition: the spans of one POST /predict whose last cell (c1) span has arrived; (spans of its trace, the http span)."""

    def found(spans: list[dict[str, Any]]) -> Any:
        for http in by_name(spans, "POST /predict"):
            tid = hex_id(http["context"]["trace_id"])
            if trace_id is not None and tid != trace_id:
                continue
            mine = trace_of(spans, tid or "")
            if by_name(mine, "rvai.cell c1") and by_name(mine, "rvai.cell c0"):
                return mine, http
        return None

    return found


# -- local runtime: one HTTP request is one trace ------------------------------------------------------


@pytest.fixture
def local_http(spans_dir: Path) -> Iterator[tuple[Any, Path]]:
    """A FastAPIDriver on the local runtime over ``AddOne → Double``, traced."""
    require_extra("fastapi")
    from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver

    with init("local") as rt, rt.start_inference(Inference(pipeline=chain_pipeline(AddOne, Double))) as proc:
        http = proc.add_driver("web", FastAPIDriver)
        with FastAPIClient(process=http) as client:
            client.wait(timeout=60)
        yield http, spans_dir


def test_one_http_request_on_local_is_one_trace_through_the_driver_the_inference_process_and_the_cells(
    local_http: tuple[Any, Path],
) -> None:
    from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient

    http, folder = local_http
    with FastAPIClient(process=http) as client:
        assert client.predict({"x": 1}, sid="cam-1") == {"y": Integer(4)}
    spans, root = spans_until(folder, complete_http_trace(), "the request's spans from both processes")
    assert root["parent_id"] is None, "the HTTP span is the root when the caller sends no traceparent"
    assert process_of(root) == "driver[web]"
    for cell in ("c0", "c1"):
        (span,) = by_name(spans, f"rvai.cell {cell}")
        assert chain(spans, span) == [f"rvai.cell {cell}", "rvai.serve", "rvai.send", "rvai.predict", "POST /predict"]
        assert process_of(span) == "inference[chain]"
        assert span["attributes"]["rvai.sid"] == "cam-1"
    (serve,) = by_name(spans, "rvai.serve")
    (send,) = by_name(spans, "rvai.send")
    assert (process_of(serve), serve["kind"]) == ("inference[chain]", "SpanKind.SERVER")
    assert (process_of(send), send["kind"]) == ("driver[web]", "SpanKind.CLIENT")
    assert root["attributes"]["http.response.status_code"] == 200
    assert root["attributes"]["http.route"] == "/predict"
    assert root["attributes"]["rvai.request_id"], "the access log's request id"


def test_an_incoming_traceparent_is_the_parent_of_the_http_span(local_http: tuple[Any, Path]) -> None:
    import httpx

    http, folder = local_http
    record = http.get_service("http")
    url = f"http://{record['taggedAddresses']['lan']['address']}:{record['port']}/predict"
    answer = httpx.post(url, json={"inputs": {"x": 2}}, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, timeout=60)
    assert answer.status_code == 200, answer.text
    spans, root = spans_until(folder, complete_http_trace(TRACE_ID), "the spans of the caller's trace")
    assert hex_id(root["parent_id"]) == PARENT_ID
    assert root["attributes"]["rvai.request_id"] == answer.headers["x-request-id"], "logs and traces meet on the request id"
    assert {process_of(s) for s in spans} == {"driver[web]", "inference[chain]"}
    assert len(by_name(spans, "rvai.cell c1")) == 1


def test_a_failing_request_marks_its_spans_failed(spans_dir: Path) -> None:
    from tests.conftest import FailNegative

    with init("local") as rt, rt.start_inference(Inference(pipeline=single(FailNegative))) as proc:
        with pytest.raises(Exception, match="negative"):
            proc.predict({"x": -1}).result(timeout=60)

    def failed(spans: list[dict[str, Any]]) -> Any:
        cells = [s for s in spans if s["name"].startswith("rvai.cell")]
        return cells and by_name(spans, "rvai.predict") and (cells, spans)

    cells, spans = spans_until(spans_dir, failed, "the failed cell's span")
    assert cells[0]["status"]["status_code"] == "ERROR"
    (predict,) = by_name(spans, "rvai.predict")
    assert predict["status"]["status_code"] == "ERROR"
    assert process_of(predict) == "main"


# -- batching ---------------------------------------------------------------------------------------


def test_a_batched_cell_call_is_one_span_linked_to_each_requests_span(spans_dir: Path) -> None:
    with init("local") as rt, rt.start_inference(Inference(pipeline=single(BatchRemember))) as proc:
        batched: list[dict[str, Any]] = []
        for round_ in range(20):  # batching depends on arrival times: send rounds until one batch forms
            futures: list[Future[Any]] = [proc.predict({"x": n}, sid=f"r{round_}-s{n}") for n in range(6)]
            for future in futures:
                future.result(timeout=60)
            spans = spans_until(
                spans_dir, lambda s: len(by_name(s, "rvai.serve")) >= 6 * (round_ + 1) and s, "the round's serve spans"
            )
            batched = [s for s in spans if s["name"] == "rvai.cell c0" and s["attributes"]["rvai.batch_size"] > 1]
            if batched:
                break
    assert batched, "no batch of two or more formed in 20 rounds"
    serves = {hex_id(s["context"]["span_id"]): s for s in by_name(spans, "rvai.serve")}
    for call in batched:
        links = call["links"]
        assert len(links) == call["attributes"]["rvai.batch_size"]
        linked = [serves[hex_id(link["context"]["span_id"])] for link in links]  # each request's span in the inference process
        assert len({hex_id(s["context"]["trace_id"]) for s in linked}) == len(links), "one trace per request"
        assert hex_id(call["parent_id"]) == hex_id(linked[0]["context"]["span_id"]), "a child of its first request"
        for link, serve in zip(links, linked):
            assert hex_id(link["context"]["trace_id"]) == hex_id(serve["context"]["trace_id"])


# -- streams ----------------------------------------------------------------------------------------


def test_a_stream_frame_is_one_trace_with_its_sink_write(spans_dir: Path) -> None:
    require_extra("fastapi")  # not needed by the stream, but the extensions' test deps
    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.dummy_sink import DummySink
    from rvai_sdk.extensions.sources.dummy_source import DummySource
    from rvai_sdk.types import FloatRange

    source = DummySource(params=DummySource.parameters(rate=FloatRange(0), count=3, seed=5))
    with init("local") as rt, rt.start_inference(Inference(pipeline=chain_pipeline(AddOne, Double))) as proc:
        proc.add_driver("stream", SourceSinkDriver, sources={"cam": source}, sinks={"log": DummySink(params={"batch_size": 1})})

        def frames(spans: list[dict[str, Any]]) -> Any:
            roots = by_name(spans, "rvai.frame cam")
            writes = by_name(spans, "rvai.sink.write log")
            cells = by_name(spans, "rvai.cell c1")
            return len(roots) == 3 and len(writes) == 3 and len(cells) == 3 and spans

        spans = spans_until(spans_dir, frames, "three frames with their sink writes")
    for root in by_name(spans, "rvai.frame cam"):
        assert root["parent_id"] is None and process_of(root) == "driver[stream]"
        mine = trace_of(spans, hex_id(root["context"]["trace_id"]) or "")
        (write,) = by_name(mine, "rvai.sink.write log")
        assert chain(mine, write) == ["rvai.sink.write log", "rvai.frame cam"]
        (cell,) = by_name(mine, "rvai.cell c1")
        assert chain(mine, cell) == ["rvai.cell c1", "rvai.serve", "rvai.send", "rvai.predict", "rvai.frame cam"]
        assert process_of(cell) == "inference[chain]"


# -- debug and ray ----------------------------------------------------------------------------------


def test_on_the_debug_runtime_a_predict_and_its_cells_are_one_trace(spans_dir: Path) -> None:
    with init("debug") as rt, rt.start_inference(Inference(pipeline=chain_pipeline(AddOne, Double))) as proc:
        assert proc.predict({"x": 1}, sid="a").result(timeout=60) == {"y": Integer(4)}
    spans = spans_until(spans_dir, lambda s: len(s) >= 3 and s, "the predict and its two cell spans")
    (predict,) = by_name(spans, "rvai.predict")
    assert predict["parent_id"] is None
    for cell in ("c0", "c1"):
        (span,) = by_name(spans, f"rvai.cell {cell}")
        assert chain(spans, span) == [f"rvai.cell {cell}", "rvai.predict"]
    assert {process_of(s) for s in spans} == {"main"}


@pytest.mark.ray
def test_on_ray_the_context_crosses_to_the_replica(spans_dir: Path, ray_instance: None) -> None:
    with init("ray") as rt, rt.start_inference(Inference(pipeline=chain_pipeline(AddOne, Double))) as proc:
        assert proc.predict({"x": 1}, sid="a").result(timeout=120) == {"y": Integer(4)}
        spans = spans_until(spans_dir, lambda s: by_name(s, "rvai.cell c1") and by_name(s, "rvai.predict") and s,
                            "the replica's cell spans", timeout=120)
    (predict,) = by_name(spans, "rvai.predict")
    mine = trace_of(spans, hex_id(predict["context"]["trace_id"]) or "")
    (cell,) = by_name(mine, "rvai.cell c1")
    assert chain(mine, cell) == ["rvai.cell c1", "rvai.serve", "rvai.send", "rvai.predict"]
    (send,) = by_name(mine, "rvai.send")
    assert send["attributes"]["rpc.system"] == "rvai.ray"
    assert process_of(cell) == "inference[chain]" and process_of(predict) == "main"


# -- off by default, and the configuration ---------------------------------------------------------


def test_tracing_is_off_and_opentelemetry_not_imported_unless_configured() -> None:
    code = (
        "import sys\n"
        "import rvai_sdk, rvai_sdk.runtime, rvai_sdk.runtime.local, rvai_sdk.transport.client, rvai_sdk.tracing\n"
        "from rvai_sdk.runtime import init, Inference\n"
        "from tests.conftest import chain_pipeline, AddOne\n"
        "with init('debug') as rt, rt.start_inference(Inference(pipeline=chain_pipeline(AddOne))) as proc:\n"
        "    proc.predict({'x': 1}).result()\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert not tracing_enabled()


def test_configure_tracing_names_the_valid_exporters_and_needs_a_path_for_files() -> None:
    with pytest.raises(ValueError, match="otlp, console, file, none"):
        configure_tracing("zipkin")
    with pytest.raises(ValueError, match="path="):
        configure_tracing("file")
    assert not tracing_enabled()


def test_the_console_exporter_writes_each_span_as_json_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    require_extra("opentelemetry.sdk.trace")
    configure_tracing("console")
    try:
        with init("debug") as rt, rt.start_inference(Inference(pipeline=chain_pipeline(AddOne))) as proc:
            proc.predict({"x": 1}).result(timeout=60)
    finally:
        shutdown_tracing()
    err = capsys.readouterr().err
    assert '"name": "rvai.cell c0"' in err and '"name": "rvai.predict"' in err


# -- the command line ------------------------------------------------------------------------------


def test_rvai_sdk_serve_with_trace_file_writes_one_trace_per_request_from_every_process(tmp_path: Path) -> None:
    import signal

    require_extra("opentelemetry.sdk.trace")
    require_extra("fastapi")
    import httpx

    from tests._serving import start_serving

    folder = tmp_path / "spans"
    root = Path(__file__).resolve().parents[2]
    process, url, lines = start_serving(
        "examples.quickstart:build_pipeline", "--runtime", "local", "--port", "0",
        "--trace", "file", "--trace-path", str(folder), cwd=root,
    )
    try:
        answer = httpx.post(f"{url}/predict", json={"inputs": {"count": 3}, "sid": "cam-1"},
                            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, timeout=60)
        assert answer.status_code == 200, answer.text

        def complete(spans: list[dict[str, Any]]) -> Any:
            mine = trace_of(spans, TRACE_ID)
            return by_name(mine, "POST /predict") and by_name(mine, "rvai.cell mean") and mine

        spans = spans_until(folder, complete, "the request's spans from the driver and inference processes")
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(lines) + out
    (http,) = by_name(spans, "POST /predict")
    assert hex_id(http["parent_id"]) == PARENT_ID and process_of(http) == "driver[http]"
    (cell,) = by_name(spans, "rvai.cell mean")
    assert chain(spans, cell) == ["rvai.cell mean", "rvai.serve", "rvai.send", "rvai.predict", "POST /predict"]
    assert process_of(cell) == "inference[Quickstart]"

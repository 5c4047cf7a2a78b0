"""The OpenAPI document is generated from the pipeline's types, and a fuzz of the API from it finds no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver
from rvai_sdk.runtime import Inference, init
from tests.conftest import require_extra
from tests.extensions.fast_api_driver._pipelines import http_pipeline

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A FastAPIDriver on the debug runtime serving the test pipeline; its base URL."""
    with init("debug") as rt, rt.start_inference(Inference(pipeline=http_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver, {"max_body_bytes": 1 << 16, "task_ttl": 5})
        with FastAPIClient(process=handle) as client:
            client.wait(timeout=30)
            yield client.base_url


def test_openapi_request_and_response_models_are_the_pipelines_types(server: str) -> None:
    doc = httpx.get(f"{server}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    inputs = schemas["HttpTestInputs"]
    assert inputs["additionalProperties"] is False and inputs["required"] == ["x", "image"]
    assert inputs["properties"]["x"] == {"type": "integer", "title": "X", "description": "a number"}
    assert inputs["properties"]["image"]["contentEncoding"] == "base64"
    assert inputs["properties"]["image"]["title"] == "Image"
    outputs = schemas["HttpTestOutputs"]
    assert set(outputs["properties"]) == {"count", "checked", "width", "height", "flipped"}
    assert outputs["properties"]["flipped"]["description"] == "the picture, mirrored left to right"

    predict = doc["paths"]["/predict"]["post"]
    content = predict["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/HttpTestPredictRequest"}
    assert schemas["HttpTestPredictRequest"]["properties"]["inputs"] == {"$ref": "#/components/schemas/HttpTestInputs"}
    assert content["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    ok = predict["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/HttpTestPredictResponse"}
    assert schemas["HttpTestPredictResponse"]["properties"]["outputs"] == {"$ref": "#/components/schemas/HttpTestOutputs"}
    for status in ("422", "413", "500", "503"):
        assert predict["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
    assert "429" in doc["paths"]["/tasks"]["post"]["responses"]
    assert set(doc["paths"]) >= {"/health", "/ready", "/pipeline", "/predict", "/predict/batch", "/tasks", "/tasks/{task_id}"}

    home = httpx.get(f"{server}/")
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    assert "<code>x</code>" in home.text and "<code>image</code>" in home.text and "a number" in home.text
    swagger = httpx.get(f"{server}/docs")
    assert swagger.status_code == 200 and "/openapi.json" in swagger.text
    assert httpx.get(f"{server}/redoc").status_code == 200


def _no_undeliberate_server_error(response: Any) -> None:
    if response.status_code < 500:
        return
    error = response.json()["error"]
    # the only deliberate 5xx: cell 'check' refuses negative x
    assert response.status_code == 500 and error["cell"] == "check" and error["type"] == "ValueError", response.text


def test_fuzzing_the_api_from_its_openapi_document_finds_no_server_error(server: str) -> None:
    require_extra("schemathesis")  # CI has it (the test extra): a missing one fails there
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import checks
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    validations = [checks.status_code_conformance, checks.content_type_conformance, checks.response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9
    calls = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=25,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any) -> None:
                nonlocal calls
                response = case.call(base_url=server, timeout=10)
                calls += 1
                _no_undeliberate_server_error(response)
                case.validate_response(response, checks=validations)

            try:
                fuzz()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to negate (a route without parameters)
    assert calls >= 100
    # after all that, the server still serves
    with FastAPIClient(host="127.0.0.1", port=int(server.rsplit(":", 1)[1])) as client:
        client.wait(timeout=10)
        assert client.pipeline()["name"] == "http-test"

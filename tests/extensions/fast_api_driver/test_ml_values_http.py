"""Tensor and Detections over HTTP: their JSON schemas are in /openapi.json and both JSON forms are accepted."""

from __future__ import annotations

import httpx
import jsonschema
import numpy as np
import pytest

from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Detections, Tensor
from tests.integration._ml_values import ml_pipeline

pytestmark = pytest.mark.timeout(120)


def test_the_openapi_document_has_the_tensor_and_detections_schemas_and_predict_takes_both_json_forms() -> None:
    with init("debug") as rt, rt.start_inference(Inference(pipeline=ml_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=handle) as client:
            client.wait(timeout=30)
            doc = httpx.get(f"{client.base_url}/openapi.json").json()
            inputs = doc["components"]["schemas"]["MlValuesInputs"]["properties"]
            features = inputs["features"]
            assert features["title"] == "Features" and features["description"] == "one row of 4 per object"
            base64_form = features["anyOf"][0]
            assert base64_form["properties"]["dtype"] == {"type": "string", "const": "float32"}
            assert base64_form["properties"]["shape"]["maxItems"] == 2
            assert base64_form["properties"]["data"]["contentEncoding"] == "base64"
            assert inputs["detections"]["required"] == ["xyxy", "scores", "class_ids"]

            found = Detections.fake(np.random.default_rng(4))
            tensor = Tensor[np.int16](np.arange(6, dtype=np.int16).reshape(2, 3))
            body = {
                "inputs": {"tensor": tensor.to_json(), "features": [[0, 1, 2, 3]], "detections": found.to_json()}
            }
            for name, value in body["inputs"].items():
                jsonschema.validate(value, inputs[name] | {"title": name})
            response = httpx.post(f"{client.base_url}/predict", json=body)
            assert response.status_code == 200, response.text
            outputs = response.json()["outputs"]
            assert Tensor.from_json(outputs["tensor"]).tolist() == [[0, 1, 2], [3, 4, 5]]
            assert Detections.from_json(outputs["detections"]) == found and outputs["rows"] == 1

            # typed values are sent in their JSON form (a plain numpy array would be sent as an Image)
            features_in = Tensor[np.float32](np.zeros((3, 4), np.float32))
            typed = client.predict({"tensor": tensor, "features": features_in, "detections": found})
            assert typed["rows"] == 3 and typed["detections"] == found

            bad = httpx.post(
                f"{client.base_url}/predict",
                json={"inputs": {**body["inputs"], "features": [[0, 1, 2]]}},
            )
            assert bad.status_code == 422 and "features" in bad.text and "(None, 4)" in bad.text

"""Tensor and Detections through a real local runtime: the inference process gets and returns them exactly."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rvai_sdk.runtime import Inference, RestrictedInferenceProcess, init
from rvai_sdk.types import Detections, Tensor
from tests.integration._ml_values import ml_pipeline
from tests.unit.types.test_detections import detections

pytestmark = pytest.mark.timeout(120)

tensors = st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_]).flatmap(
    lambda dt: hnp.arrays(dtype=dt, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
)


@pytest.fixture(scope="module")
def local_process() -> Iterator[RestrictedInferenceProcess]:
    with init("local") as rt, rt.start_inference(Inference(pipeline=ml_pipeline())) as proc:
        yield proc


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=tensors, found=detections())
def test_tensors_and_detections_round_trip_through_the_local_runtime(
    local_process: RestrictedInferenceProcess, array: np.ndarray, found: Detections
) -> None:
    features = np.arange(len(found) * 4, dtype=np.float32).reshape(len(found), 4)
    out = local_process.predict({"tensor": array, "features": features, "detections": found}, sid="s").result(timeout=60)
    assert type(out["tensor"]) is Tensor and out["tensor"].dtype == array.dtype
    assert out["tensor"].shape == array.shape and out["tensor"].tobytes() == array.tobytes()
    assert out["detections"] == found and out["rows"] == len(found)
    assert out["kept"] == found[found.scores >= 0.5]


def test_a_1080p_tensor_and_nested_lists_arrive_intact(local_process: RestrictedInferenceProcess) -> None:
    frame = np.random.default_rng(0).random((1080, 1920, 3), dtype=np.float32)  # 24 MB: through shared memory
    found = Detections.fake(np.random.default_rng(1))
    out = local_process.predict(
        {"tensor": frame, "features": [[1, 2, 3, 4.5]], "detections": found.to_json()}, sid="big"
    ).result(timeout=60)
    assert np.array_equal(out["tensor"], frame) and out["rows"] == 1 and out["detections"] == found

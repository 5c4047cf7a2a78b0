"""Detections: validation naming the field, slicing, JSON, pickle, schema, fake, and supervision both ways."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types import Detections, coerce, fake, json_schema
from tests.conftest import require_extra
from tests.unit.types._support import examples

NAMES = ["person", "car", "bicycle", "dog"]


@st.composite
def detections(draw: Any) -> Detections:
    n = draw(st.integers(0, 6))
    coords = hnp.arrays(np.float32, (n, 4), elements=st.floats(-1e4, 1e4, width=32))
    masks = draw(st.none() | hnp.arrays(np.bool_, st.tuples(st.just(n), st.integers(1, 6), st.integers(1, 6))))
    return Detections(
        xyxy=draw(coords),
        scores=draw(hnp.arrays(np.float32, (n,), elements=st.floats(0, 1, width=32))),
        class_ids=draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, len(NAMES) - 1))),
        class_names=draw(st.none() | st.just(NAMES)),
        track_ids=draw(st.none() | hnp.arrays(np.int64, (n,), elements=st.integers(-(2**62), 2**62))),
        masks=masks,
    )


@examples
@given(detections())
def test_detections_round_trip_exactly_through_json_pickle_and_deepcopy(value: Detections) -> None:
    text = json.dumps(value.to_json(), allow_nan=False)
    decoded = Detections.from_json(json.loads(text))
    assert decoded == value and decoded.xyxy.dtype == np.float32 and decoded.class_ids.dtype == np.int64
    assert pickle.loads(pickle.dumps(value, protocol=5)) == value
    assert copy.deepcopy(value) == value
    jsonschema.validate(value.to_json(), Detections.json_schema())


@examples
@given(detections())
def test_detections_convert_losslessly_to_and_from_supervision(value: Detections) -> None:
    require_extra("supervision")
    converted = value.to_supervision()
    assert len(converted) == len(value)
    assert Detections.from_supervision(converted) == value
    assert coerce(Detections, converted) == value
    if value.class_names is not None and len(value):
        assert list(converted.data["class_name"]) == value.names()


def test_supervision_detections_without_our_metadata_take_names_from_the_per_object_data() -> None:
    require_extra("supervision")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no OpenCV: supervision says it uses NumPy
        import supervision as sv
    raw = sv.Detections(
        xyxy=np.array([[0, 0, 4, 4], [1, 1, 5, 5]], dtype=np.float64),
        class_id=np.array([2, 0]),
        data={"class_name": np.array(["car", "person"])},
    )
    value = Detections.from_supervision(raw)
    assert value.scores.tolist() == [1.0, 1.0] and value.xyxy.dtype == np.float32
    assert value.class_names == ["person", "1", "car"] and value.names() == ["car", "person"]


def test_slicing_returns_detections_and_keeps_the_class_names() -> None:
    value = Detections(
        xyxy=[[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]],
        scores=[0.9, 0.2, 0.6],
        class_ids=[0, 1, 0],
        class_names=["person", "car"],
        track_ids=[7, 8, 9],
        masks=np.zeros((3, 2, 2), bool),
    )
    assert len(value) == 3 and len(Detections.empty()) == 0
    kept = value[value.scores > 0.5]
    assert isinstance(kept, Detections) and kept.track_ids is not None and kept.track_ids.tolist() == [7, 9]
    assert kept.names() == ["person", "person"] and kept.masks is not None and kept.masks.shape == (2, 2, 2)
    assert value[-1].xyxy.tolist() == [[0, 0, 3, 3]] and value[1:].scores.shape == (2,)
    assert value[[2, 0]].class_ids.tolist() == [0, 0]
    assert [len(d) for d in value] == [1, 1, 1]
    with pytest.raises(IndexError, match="out of range for 3"):
        value[3]


def test_bad_fields_are_refused_naming_the_field_and_the_fix() -> None:
    with pytest.raises(InputValidationError, match=r"\.xyxy: expected shape \(N, 4\), got \(2, 3\)"):
        Detections(xyxy=np.zeros((2, 3)), scores=[0, 0], class_ids=[0, 0])
    with pytest.raises(InputValidationError, match=r"\.scores: expected shape \(2,\)"):
        Detections(xyxy=np.zeros((2, 4)), scores=[0], class_ids=[0, 0])
    with pytest.raises(InputValidationError, match=r"\.class_ids: expected whole numbers"):
        Detections(xyxy=np.zeros((1, 4)), scores=[0], class_ids=[0.5])
    with pytest.raises(InputValidationError, match=r"\.class_ids: class id 2 has no name in class_names"):
        Detections(xyxy=np.zeros((1, 4)), scores=[0], class_ids=[2], class_names=["a", "b"])
    with pytest.raises(InputValidationError, match=r"\.xyxy: every value must be finite"):
        Detections(xyxy=[[0, 0, np.nan, 1]], scores=[0], class_ids=[0])
    with pytest.raises(InputValidationError, match=r"\.masks: expected shape \(1, H, W\)"):
        Detections(xyxy=np.zeros((1, 4)), scores=[0], class_ids=[0], masks=np.zeros((2, 3, 3), bool))
    with pytest.raises(InputValidationError, match="missing: class_ids; unknown: boxes"):
        Detections.from_json({"xyxy": [], "scores": [], "boxes": []})
    with pytest.raises(InputValidationError, match="expected Detections, got str"):
        coerce(Detections, "boxes")


def test_fake_detections_fit_the_schema() -> None:
    rng = np.random.default_rng(3)
    schema = json_schema(Detections)
    for _ in range(10):
        value = fake(Detections, rng)
        jsonschema.validate(value.to_json(), schema)
        assert Detections.from_json(value.to_json()) == value

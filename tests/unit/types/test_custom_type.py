"""A value type of the user's own (the guide's Polygon) works like a built-in one: protocol, data classes, runtimes."""

from __future__ import annotations

import copy
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.exc import InputValidationError
from rvai_sdk.pipeline import PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Float, coerce, fake, from_json, is_value_type, json_schema, to_json
from tests.unit.types._polygon import Polygon
from tests.unit.types._support import examples

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "guides" / "custom_types.md"

coordinate = st.floats(-1e6, 1e6, allow_nan=False)
polygons = st.lists(st.tuples(coordinate, coordinate), min_size=3, max_size=12).map(Polygon)


def test_the_example_type_is_the_guides_code() -> None:
    first_block = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)[0]
    assert first_block in (Path(__file__).parent / "_polygon.py").read_text(encoding="utf-8")


@examples
@given(polygons)
def test_the_custom_type_round_trips_through_json_pickle_and_deepcopy(zone: Polygon) -> None:
    assert is_value_type(Polygon) and is_value_type(Polygon | None)
    assert from_json(Polygon, json.loads(json.dumps(to_json(zone), allow_nan=False))) == zone
    assert pickle.loads(pickle.dumps(zone, protocol=5)) == zone
    assert copy.deepcopy(zone) == zone
    jsonschema.validate(zone.to_json(), json_schema(Polygon))


def test_fake_values_fit_the_schema_and_survive_coerce() -> None:
    rng = np.random.default_rng(0)
    for _ in range(10):
        zone = fake(Polygon, rng)
        jsonschema.validate(zone.to_json(), Polygon.json_schema())
        assert coerce(Polygon, zone) is zone and zone.area > 0


@dataclass
class ZoneIn(Inputs):
    zone: Polygon = Inputs.field(description="where to look")
    x: Float = Inputs.field()
    y: Float = Inputs.field()


@dataclass
class ZoneOut(Outputs):
    inside: Float = Outputs.field(description="1.0 inside the zone, else 0.0")
    zone: Polygon = Outputs.field(description="the zone, back")


class InZone(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: ZoneIn) -> ZoneOut:
        assert type(inputs.zone) is Polygon
        return ZoneOut(inside=float(inputs.zone.contains(inputs.x, inputs.y)), zone=inputs.zone)


def test_a_data_class_names_the_field_of_a_bad_value() -> None:
    with pytest.raises(InputValidationError, match=r"ZoneIn\.zone: expected Polygon \(3 or more \[x, y\] pairs\), got shape \(2, 2\)"):
        ZoneIn(zone=[[0, 0], [1, 1]], x=0.0, y=0.0)  # type: ignore[arg-type]


@pytest.mark.timeout(120)
def test_the_custom_type_crosses_the_local_runtime_both_ways() -> None:
    pf = PipelineFactory(name="zone")
    cell = pf.add_cell(ref="in_zone", cell=InZone())
    for port in ("zone", "x", "y"):
        pf.declare_input(ref=port, input=getattr(cell.inputs, port))
    pf.declare_output(ref="inside", output=cell.outputs.inside)
    pf.declare_output(ref="zone", output=cell.outputs.zone)
    square = [[0, 0], [10, 0], [10, 10], [0, 10]]
    with init("local") as rt, rt.start_inference(Inference(pipeline=pf.build())) as proc:
        inside = proc.predict({"zone": square, "x": 5, "y": 5}, sid="a").result(timeout=60)
        outside = proc.predict({"zone": Polygon(square), "x": 50, "y": 5}, sid="a").result(timeout=60)
        with pytest.raises(InputValidationError, match="zone"):
            proc.predict({"zone": "square", "x": 0, "y": 0}, sid="a")
    assert inside == {"inside": 1.0, "zone": Polygon(square)} and type(inside["zone"]) is Polygon
    assert outside["inside"] == 0.0

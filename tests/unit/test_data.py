"""Data classes: validation and coercion on creation, metadata for docs and schemas."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.exc import InputValidationError, ParameterError
from rvai_sdk.types import Float, FloatRange, Image, Integer, List, String


@dataclass
class Detection(Inputs):
    image: Image = Inputs.field(name="Frame", description="An RGB frame")
    scores: List[Float] = Inputs.field(name="Scores", default=List[Float]([]))
    label: String | None = Inputs.field(default=None)


@dataclass
class Thresholds(Parameters):
    threshold: FloatRange = Parameters.field(name="Threshold", default=FloatRange(0.5, min=0.0, max=1.0))
    top_k: Integer = Parameters.field(default=Integer(5))


@dataclass
class History(State):
    values: List[Integer] = State.field(default=List[Integer]([]))


def test_plain_lossless_values_are_coerced_on_creation() -> None:
    d = Detection(image=np.zeros((2, 3, 3), dtype=np.uint8), scores=[1, 0.5])  # type: ignore[arg-type]
    assert isinstance(d.image, Image)
    assert type(d.scores[0]) is Float
    assert d.label is None


def test_wrong_values_name_the_class_field_and_expected_type() -> None:
    with pytest.raises(InputValidationError, match=r"Detection\.image: expected Image") as info:
        Detection(image="not an image")  # type: ignore[arg-type]
    assert info.value.field == "image"
    with pytest.raises(InputValidationError, match=r"Detection\.scores\[1\]: expected Float, got str") as info:
        Detection(image=np.zeros((1, 1, 3), np.uint8), scores=[0.1, "x"])  # type: ignore[arg-type]
    assert info.value.field == "scores[1]"


def test_parameters_raise_parameter_error_and_respect_the_default_bounds() -> None:
    assert Thresholds(threshold=0.9).threshold.max == 1.0  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"Thresholds\.threshold: .*1\.5") as info:
        Thresholds(threshold=1.5)  # type: ignore[arg-type]
    assert info.value.field == "threshold"


def test_mutable_defaults_are_fresh_per_instance() -> None:
    a, b = History(), History()
    a.values.append(Integer(1))
    assert list(b.values) == []


def test_field_metadata_is_readable_for_docs_and_schemas() -> None:
    infos = {f.name: f for f in Detection.fields_info()}
    assert infos["image"].title == "Frame"
    assert infos["image"].description == "An RGB frame"
    assert infos["image"].required
    assert not infos["scores"].required
    assert infos["label"].title == "label"


def test_json_schema_carries_titles_descriptions_bounds_and_required() -> None:
    schema = Thresholds.json_schema()
    assert schema["type"] == "object"
    threshold = schema["properties"]["threshold"]
    assert threshold["title"] == "Threshold"
    assert (threshold["minimum"], threshold["maximum"], threshold["default"]) == (0.0, 1.0, 0.5)
    assert "required" not in schema
    assert Detection.json_schema()["required"] == ["image"]


def test_from_dict_names_unknown_and_missing_fields() -> None:
    with pytest.raises(InputValidationError, match=r"Detection has no field 'img'; its fields are: image, label, scores"):
        Detection.from_dict({"img": 1})
    with pytest.raises(InputValidationError, match=r"Detection: missing required field 'image'"):
        Detection.from_dict({})
    with pytest.raises(ParameterError, match="Thresholds has no field 'k'"):
        Thresholds.from_dict({"k": 1})


def test_json_round_trip_of_a_data_class() -> None:
    d = Detection(image=np.arange(12, dtype=np.uint8).reshape(2, 2, 3), scores=[0.25], label="cat")  # type: ignore[arg-type]
    back = Detection.from_json(d.to_json())
    assert np.array_equal(back.image, d.image)
    assert list(back.scores) == [0.25]
    assert back.label == "cat"


def test_data_class_instances_pickle() -> None:
    p = pickle.loads(pickle.dumps(Thresholds(threshold=0.2)))  # type: ignore[arg-type]
    assert p.threshold == 0.2 and p.threshold.max == 1.0


def test_outputs_base_has_no_fields_and_subclasses_validate() -> None:
    assert Outputs.fields_info() == ()

    @dataclass
    class Out(Outputs):
        n: Integer = Outputs.field()

    assert Out(n=3).to_dict() == {"n": 3}  # type: ignore[arg-type]


def _parameters_with_local_aliases() -> tuple[type[Parameters], type[Parameters]]:
    from rvai_sdk.types import Enum

    Mode = Enum[Float]  # noqa: N806 (a local alias, as users write them)
    Vec = List[Integer]  # noqa: N806

    @dataclass
    class Base(Parameters):
        mode: Mode = Parameters.field(default=Mode(options=[1.0, 2.0], selected=1.0))
        v: Vec = Parameters.field(default=Vec([]))

    @dataclass
    class Tuned(Base):
        gain: Float = Parameters.field(default=Float(1.0))

    @dataclass
    class Same(Base):
        pass

    return Tuned, Same


def test_a_subclass_of_a_data_class_defined_in_a_function_resolves_its_bases_local_aliases() -> None:
    """A data class keeps only the names its own annotations mention; its bases' names come with it, or a
    subclass could not resolve a base's field annotated with a local alias."""
    tuned, same = _parameters_with_local_aliases()
    p = tuned(mode=2.0, gain=2.0)
    assert (float(p.mode.selected), float(p.gain), list(p.v)) == (2.0, 2.0, [])
    assert float(same().mode.selected) == 1.0


Label = String  # a module-level name that a base defined in a function spells differently


def _base_with_a_local_label() -> type[Inputs]:
    Label = Integer  # noqa: N806 (shadows the module's: this base's own)

    @dataclass
    class LabelledBase(Inputs):
        x: Label = Inputs.field()

    return LabelledBase


def test_each_class_of_the_mro_resolves_its_own_annotations_with_its_own_names() -> None:
    """One namespace for the whole MRO let the base's local ``Label`` (Integer) type the subclass's field too."""
    base = _base_with_a_local_label()

    @dataclass
    class Labelled(base):  # type: ignore[valid-type,misc]
        y: Label = Inputs.field()

    assert {f.name: f.type for f in Labelled.fields_info()} == {"x": Integer, "y": String}

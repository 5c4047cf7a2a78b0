"""Cell definitions: annotations read once, every mistake reported with the cell's name."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import pytest

from rvai_sdk.cell import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_WAIT, Cell, PortRef, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.exc import CellDefinitionError, PortNotFoundError
from rvai_sdk.types import Integer
from tests.conftest import AddOne, BatchRemember, Count, Counter, Remember, XIn, YOut


def test_spec_is_read_from_call_annotations() -> None:
    spec = Count.spec()
    assert spec.name == "Count"
    assert spec.inputs is XIn
    assert spec.outputs is YOut
    assert spec.parameters is Parameters
    assert spec.state is Counter
    assert (spec.has_call, spec.has_call_batch, spec.has_load_model) == (True, False, False)
    assert (spec.max_batch_size, spec.concurrency) == (1, 1)


def test_batched_cells_get_default_or_declared_limits() -> None:
    spec = BatchRemember.spec()
    assert spec.has_call_batch and not spec.has_call
    assert (spec.max_batch_size, spec.max_batch_wait) == (8, 0.05)

    @cell
    class Plain(Cell):
        @classmethod
        def call_batch(cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]) -> list[YOut]:
            return [YOut(y=i.x) for i in inputs_list]

    assert (Plain.spec().max_batch_size, Plain.spec().max_batch_wait) == (DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_WAIT)


def test_ports_are_references_to_cell_instance_fields() -> None:
    a, b = AddOne(), AddOne()
    assert isinstance(a.inputs.x, PortRef)
    assert a.inputs.x == a.inputs.x
    assert a.inputs.x != b.inputs.x
    assert a.outputs.y.type is Integer
    assert [p.name for p in Remember().outputs] == ["y", "seen"]
    assert "x" in a.inputs and len(a.inputs) == 1
    assert repr(a.inputs.x) == "<input port AddOne.x: Integer>"


def test_an_unknown_port_names_the_cell_and_lists_its_ports() -> None:
    with pytest.raises(PortNotFoundError, match=r"cell AddOne has no input port 'image'; its input ports are: x"):
        AddOne().inputs.image
    with pytest.raises(AttributeError):
        AddOne().outputs.nope


def test_call_without_annotations_is_a_definition_error_naming_the_cell() -> None:
    with pytest.raises(CellDefinitionError, match=r"cell NoHints: call\(\) parameter 'inputs' has no annotation") as info:

        @cell
        class NoHints(Cell):
            @classmethod
            def call(cls, context, parameters: Parameters, inputs):  # type: ignore[no-untyped-def]
                return None

    assert info.value.cell == "NoHints"


def test_call_without_return_annotation_is_a_definition_error() -> None:
    with pytest.raises(CellDefinitionError, match=r"cell NoReturn: call\(\) has no return annotation"):

        @cell
        class NoReturn(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn):  # type: ignore[no-untyped-def]
                return None


def test_returning_a_non_outputs_type_is_a_definition_error() -> None:
    with pytest.raises(CellDefinitionError, match=r"cell ReturnsInt: call\(\) returns int, which is not a subclass of Outputs"):

        @cell
        class ReturnsInt(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> int:
                return 1


def test_inputs_annotated_with_outputs_class_is_a_definition_error() -> None:
    with pytest.raises(CellDefinitionError, match=r"takes inputs of type YOut, which is not a subclass of Inputs"):

        @cell
        class Swapped(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: YOut) -> YOut:
                return inputs  # type: ignore[return-value]


def test_a_state_that_is_not_a_state_subclass_is_a_definition_error() -> None:
    with pytest.raises(CellDefinitionError, match=r"cell BadState: state=.*XIn.* is not a State subclass"):

        @cell(state=XIn)  # type: ignore[arg-type]
        class BadState(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
                return YOut(y=1)


@dataclass
class NoDefaultState(State):
    n: Integer = State.field()


def test_state_fields_need_defaults() -> None:
    with pytest.raises(CellDefinitionError, match=r"cell NeedsDefault: state field\(s\) n of NoDefaultState have no default"):

        @cell(state=NoDefaultState)
        class NeedsDefault(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
                return YOut(y=1)


@dataclass
class PlainTyped(Inputs):
    x: int = 0


def test_data_class_fields_must_use_rvai_types() -> None:
    with pytest.raises(CellDefinitionError, match=r"cell UsesInt: PlainTyped\.x is annotated int, which is not an rvai_sdk type"):

        @cell
        class UsesInt(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: PlainTyped) -> YOut:
                return YOut(y=1)


class NotADataclass(Inputs):
    x: Integer


def test_data_classes_must_be_decorated_with_dataclass() -> None:
    with pytest.raises(CellDefinitionError, match=r"NotADataclass is not a dataclass; decorate it with @dataclasses.dataclass"):

        @cell
        class Undecorated(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: NotADataclass) -> YOut:
                return YOut(y=1)


def test_call_must_be_a_classmethod() -> None:
    with pytest.raises(CellDefinitionError, match=r"cell Instance: call\(\) must be a @classmethod"):

        @cell
        class Instance(Cell):
            def call(self, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:  # type: ignore[override]
                return YOut(y=1)


def test_a_cell_without_call_or_call_batch_is_rejected() -> None:
    with pytest.raises(CellDefinitionError, match="cell Empty defines neither call"):

        @cell
        class Empty(Cell):
            pass


def test_batching_limits_without_call_batch_are_rejected() -> None:
    with pytest.raises(CellDefinitionError, match="batching limits are set but the cell has no call_batch"):

        @cell(max_batch_size=8)
        class NotBatched(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
                return YOut(y=1)


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(CellDefinitionError, match="concurrency must be an int >= 1, got 0"):

        @cell(concurrency=0)
        class Zero(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
                return YOut(y=1)


def test_call_and_call_batch_must_agree_on_types() -> None:
    @dataclass
    class OtherOut(Outputs):
        z: Integer = Outputs.field()

    with pytest.raises(CellDefinitionError, match=r"cell Disagree: call\(\) and call_batch\(\) disagree"):

        @cell
        class Disagree(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
                return YOut(y=1)

            @classmethod
            def call_batch(cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]) -> list[OtherOut]:
                return []


def test_decorating_a_non_cell_class_is_rejected() -> None:
    with pytest.raises(CellDefinitionError, match="@cell decorates subclasses of rvai_sdk.cell.Cell; 'Loose' is not one"):

        @cell
        class Loose:
            pass


def test_classes_defined_inside_a_function_resolve() -> None:
    @dataclass
    class LocalIn(Inputs):
        v: Integer = Inputs.field()

    @dataclass
    class LocalOut(Outputs):
        w: Integer = Outputs.field()

    @cell
    class Local(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: LocalIn) -> LocalOut:
            return LocalOut(w=inputs.v)

    assert Local.spec().inputs is LocalIn
    assert Local().outputs.w.type is Integer


def test_cells_without_the_decorator_are_validated_when_instantiated() -> None:
    class Lazy(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: Any) -> YOut:
            return YOut(y=1)

    with pytest.raises(CellDefinitionError, match=r"cell Lazy: call\(\) takes inputs of type Any"):
        Lazy()


def test_cell_instances_pickle() -> None:
    clone = pickle.loads(pickle.dumps(Remember()))
    assert type(clone) is Remember
    assert clone.outputs.seen.name == "seen"


def test_call_batch_may_omit_annotations_when_call_declares_the_types() -> None:
    # As the GPU guide writes it: call() is annotated, call_batch() is not.
    @cell(max_batch_size=8)
    class Batched(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
            return YOut(y=inputs.x + 1)

        @classmethod
        def call_batch(cls, contexts, parameters, inputs_list):  # type: ignore[no-untyped-def]
            return [YOut(y=i.x + 1) for i in inputs_list]

    spec = Batched.spec()
    assert (spec.inputs, spec.outputs, spec.parameters) == (XIn, YOut, Parameters)
    assert spec.has_call and spec.has_call_batch and spec.max_batch_size == 8


def test_a_partly_annotated_call_batch_is_still_checked_against_call() -> None:
    with pytest.raises(CellDefinitionError, match=r"call_batch\(\) has no return annotation"):

        @cell
        class Partly(Cell):
            @classmethod
            def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
                return YOut(y=inputs.x)

            @classmethod
            def call_batch(cls, contexts, parameters: Parameters, inputs_list: list[XIn]):  # type: ignore[no-untyped-def]
                return []

        Partly.spec()


def test_a_call_batch_alone_still_needs_annotations() -> None:
    with pytest.raises(CellDefinitionError, match="has no annotation"):

        @cell
        class Bare(Cell):
            @classmethod
            def call_batch(cls, contexts, parameters, inputs_list):  # type: ignore[no-untyped-def]
                return []

        Bare.spec()

"""Building pipelines: the DAG with its virtual source and sink, and every build error at once."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest

from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.exc import InputValidationError, MissingExtraError, PipelineBuildError
from rvai_sdk.pipeline import SINK, SOURCE, PipelineFactory
from rvai_sdk.types import Float, Integer
from tests.conftest import AddOne, Double, Remember, Sum, XIn, diamond_pipeline, require_extra


@dataclass
class FloatOut(Outputs):
    f: Float = Outputs.field()
    n: Integer = Outputs.field()


class MakeFloat(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> FloatOut:
        return FloatOut(f=0.5, n=1)  # type: ignore[arg-type]


@dataclass
class FloatIn(Inputs):
    f: Float = Inputs.field()


def test_graph_has_virtual_source_and_sink_and_a_topological_order() -> None:
    p = diamond_pipeline()
    assert set(p.graph.nodes) == {SOURCE, SINK, "a", "b", "c", "d", "e"}
    assert p.graph.edges[SOURCE, "a"]["ports"] == [("x", "x")]
    assert p.graph.edges["d", SINK]["ports"] == [("y", "sum")]
    assert p.order.index("a") < p.order.index("b") < p.order.index("d") < p.order.index("e")
    assert p.predecessors("d") == ["b", "c"] or sorted(p.predecessors("d")) == ["b", "c"]
    assert list(p.inputs) == ["x"]
    assert list(p.outputs) == ["sum", "count", "seen"]


def test_one_pipeline_input_may_feed_several_cell_inputs() -> None:
    pf = PipelineFactory(name="fan-out")
    a, b, s = pf.add_cell(ref="a", cell=AddOne()), pf.add_cell(ref="b", cell=Double()), pf.add_cell(ref="s", cell=Sum())
    pf.declare_input(ref="x", input=a.inputs.x)
    pf.declare_input(ref="x", input=b.inputs.x)
    pf.connect("a.y", "s.x")
    pf.connect(b.outputs.y, s.inputs.y)
    pf.declare_output(ref="out", output="s.y")
    p = pf.build()
    assert p.inputs["x"].targets == (("a", "x"), ("b", "x"))


def test_input_and_output_schemas_come_from_the_cell_types() -> None:
    p = diamond_pipeline()
    assert p.input_schema()["properties"]["x"]["type"] == "integer"
    assert p.input_schema()["required"] == ["x"]
    assert p.output_schema()["properties"]["seen"]["type"] == "array"
    described = p.describe()
    assert described["cells"]["c"]["state"] == "Seen"
    assert described["name"] == "diamond"


def test_every_build_problem_is_listed_in_one_error() -> None:
    pf = PipelineFactory(name="broken")
    a = pf.add_cell(ref="a", cell=AddOne())
    pf.add_cell(ref="a", cell=Double())
    f = pf.add_cell(ref="f", cell=MakeFloat())
    s = pf.add_cell(ref="s", cell=Sum())
    orphan = Remember()
    pf.declare_input(ref="x", input=a.inputs.x)
    pf.declare_input(ref="x", input=f.inputs.x)
    pf.connect(f.outputs.f, s.inputs.x)  # Float into Integer
    pf.connect(a.outputs.y, s.inputs.y)
    pf.connect(a.outputs.y, "s.y")  # fed twice
    pf.connect(orphan.outputs.y, s.inputs.x)
    pf.connect("zz.y", "s.x")
    pf.declare_output(ref="out", output=s.outputs.y)
    pf.declare_output(ref="out", output=a.outputs.y)
    with pytest.raises(PipelineBuildError) as info:
        pf.build()
    text = str(info.value)
    assert text.startswith(f"{len(info.value.problems)} problems in the pipeline:")
    expected = [
        "duplicate ref 'a': two cells were added under it",
        "port 's.x' expects Integer but 'f.f' produces Float; connect 'f.n' instead, or add a converter cell",
        "input port 's.y' is fed 2 times (by 'a.y' and by 'a.y')",
        "port Remember.y belongs to a cell that is not in the pipeline",
        "unknown ref 'zz' in port 'zz.y'; the pipeline's cells are: a, f, s",
        "output ref 'out' is declared twice ('s.y' and 'a.y')",
        "input port 's.x' (Integer) is never fed",
    ]
    for piece in expected:
        assert any(piece in p for p in info.value.problems), f"missing problem: {piece}\n{text}"


def test_a_cycle_is_reported_with_its_path() -> None:
    pf = PipelineFactory(name="loop")
    a, b = pf.add_cell(ref="a", cell=AddOne()), pf.add_cell(ref="b", cell=AddOne())
    pf.connect(a.outputs.y, b.inputs.x)
    pf.connect(b.outputs.y, a.inputs.x)
    pf.declare_output(ref="y", output=b.outputs.y)
    with pytest.raises(PipelineBuildError, match=r"the pipeline has a cycle: (a -> b -> a|b -> a -> b)"):
        pf.build()


def test_wrong_direction_and_bad_refs_are_reported() -> None:
    pf = PipelineFactory(name="dirs")
    a = pf.add_cell(ref="a", cell=AddOne())
    pf.add_cell(ref="bad.ref", cell=AddOne())
    pf.add_cell(ref="cls", cell=AddOne)  # type: ignore[arg-type]
    pf.declare_input(ref="x", input=a.inputs.x)
    pf.connect(a.inputs.x, a.outputs.y)
    pf.declare_output(ref="y", output=a.inputs.x)
    with pytest.raises(PipelineBuildError) as info:
        pf.build()
    problems = "\n".join(info.value.problems)
    assert "cell ref 'bad.ref' is not valid" in problems
    assert "add_cell(ref='cls') got" in problems and "pass an instance: MyCell()" in problems
    assert "connect(): 'a.x' is an input port where an output port is expected; connect(output, input) takes the producing port first" in problems
    assert "declare_output(ref='y'): 'a.x' is an input port where an output port is expected" in problems


def test_a_pipeline_without_outputs_is_rejected() -> None:
    pf = PipelineFactory(name="mute")
    a = pf.add_cell(ref="a", cell=AddOne())
    pf.declare_input(ref="x", input=a.inputs.x)
    with pytest.raises(PipelineBuildError, match="pipeline 'mute' declares no output"):
        pf.build()


def test_the_same_cell_instance_under_two_refs_is_rejected() -> None:
    pf = PipelineFactory(name="twice")
    c = AddOne()
    pf.add_cell(ref="a", cell=c)
    pf.add_cell(ref="b", cell=c)
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="y", output=c.outputs.y)
    with pytest.raises(PipelineBuildError, match=r"the same AddOne instance was added as 'a' and 'b'; create one instance per ref"):
        pf.build()


def test_one_input_ref_cannot_feed_ports_of_different_types() -> None:
    @dataclass
    class FIn(Inputs):
        x: Float = Inputs.field()

    class TakesFloat(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: FIn) -> FloatOut:
            return FloatOut(f=inputs.x, n=1)  # type: ignore[arg-type]

    pf = PipelineFactory(name="types")
    a, f = pf.add_cell(ref="a", cell=AddOne()), pf.add_cell(ref="f", cell=TakesFloat())
    pf.declare_input(ref="x", input=a.inputs.x)
    pf.declare_input(ref="x", input=f.inputs.x)
    pf.declare_output(ref="y", output=a.outputs.y)
    with pytest.raises(PipelineBuildError, match=r"pipeline input 'x' feeds ports of different types"):
        pf.build()


def test_validate_inputs_names_nested_fields() -> None:
    p = diamond_pipeline()
    assert p.validate_inputs({"x": 3}) == {"x": 3}
    with pytest.raises(InputValidationError, match=r"input 'x': expected Integer, got list") as info:
        p.validate_inputs({"x": [1]})
    assert info.value.field == "x"
    with pytest.raises(InputValidationError, match="inputs must be a mapping"):
        p.validate_inputs([1])  # type: ignore[arg-type]


def test_pipelines_pickle() -> None:
    p = pickle.loads(pickle.dumps(diamond_pipeline()))
    assert p.order == diamond_pipeline().order


def test_to_dot_lists_source_sink_cells_and_port_labels() -> None:
    dot = diamond_pipeline().to_dot()
    assert f'"{SOURCE}" -> "a"' in dot
    assert f'"d" -> "{SINK}"' in dot
    assert "state: Seen" in dot
    assert "y → sum" in dot


def test_show_renders_svg_and_writes_files(tmp_path: Path) -> None:
    require_extra("pygraphviz")
    drawing = diamond_pipeline().show()
    assert drawing._repr_svg_().lstrip().startswith(("<?xml", "<svg"))
    assert "sink" in drawing.svg and ">a<" in drawing.svg
    out = diamond_pipeline().show(tmp_path / "graph.png")
    assert out.path is not None and out.path.read_bytes().startswith(b"\x89PNG")


def test_show_without_the_draw_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pygraphviz", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'rvai_sdk\[draw\]'"):
        diamond_pipeline().show()

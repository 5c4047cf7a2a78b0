"""Async cells and awaitable predict on the debug runtime: definition checks, async call_batch, errors,
``apredict`` on the process and on the driver's port, and the guard against blocking the cells' loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Parameters, State
from rvai_sdk.exc import CellDefinitionError, CellError, InputValidationError
from rvai_sdk.execution import async_calls
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Integer
from tests.conftest import AddOne, XIn, YOut, chain_pipeline, single

pytestmark = pytest.mark.timeout(30)


@dataclass
class Total(State):
    sum: Integer = State.field(default=Integer(0))


@cell(state=Total)
class AsyncTotal(Cell):
    @classmethod
    async def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        await asyncio.sleep(0)  # gives the loop away: other coroutines may run meanwhile
        context.state.sum = Integer(context.state.sum + inputs.x)
        return YOut(y=context.state.sum)


@cell(max_batch_size=4, max_batch_wait=0.2)
class AsyncBatchDouble(Cell):
    @classmethod
    async def call_batch(
        cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]
    ) -> list[YOut | Exception]:
        await asyncio.sleep(0)
        return [ValueError("no negatives") if i.x < 0 else YOut(y=i.x * 2) for i in inputs_list]


class AsyncFails(Cell):
    @classmethod
    async def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        await asyncio.sleep(0)
        raise KeyError(f"nothing for {int(inputs.x)}")


class AsyncWrongReturn(Cell):
    @classmethod
    async def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        return inputs  # type: ignore[return-value]


def test_the_spec_says_which_cells_are_async() -> None:
    assert AsyncTotal.spec().is_async and AsyncBatchDouble.spec().is_async
    assert not AddOne.spec().is_async


def test_async_load_model_and_async_generators_are_refused_with_the_cell_named() -> None:
    with pytest.raises(CellDefinitionError, match=r"cell AsyncLoad: load_model\(\) is an async def; define it with a plain def"):

        @cell
        class AsyncLoad(Cell):
            @classmethod
            async def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
                return None

            @classmethod
            async def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
                return YOut(y=inputs.x)

    with pytest.raises(CellDefinitionError, match=r"cell Streams: call\(\) is an async generator .* use return, not yield"):

        @cell
        class Streams(Cell):
            @classmethod
            async def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:  # type: ignore[misc]
                yield YOut(y=inputs.x)


def test_async_cells_keep_per_sid_state_in_a_chain_with_sync_cells() -> None:
    with init("debug") as rt, rt.start_inference(Inference(pipeline=chain_pipeline(AddOne, AsyncTotal))) as proc:
        assert [proc.predict({"x": x}, sid="a").result()["y"] for x in (1, 2, 3)] == [2, 5, 9]
        assert proc.predict({"x": 10}, sid="b").result()["y"] == 11
        assert proc.get_state("a")["c1"].sum == 9


def test_async_call_batch_batches_and_fails_items_alone() -> None:
    async def send(proc: Any) -> list[Any]:
        futures = [proc.apredict({"x": x}, sid=f"s{x}") for x in (1, -1, 3)]
        return await asyncio.gather(*futures, return_exceptions=True)

    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(AsyncBatchDouble))) as proc:
        first, failed, third = asyncio.run(send(proc))
        assert first == {"y": 2} and third == {"y": 6}
        assert isinstance(failed, CellError) and "no negatives" in str(failed) and failed.sid == "s-1"


def test_a_failing_async_cell_fails_its_request_with_the_cell_and_cause_named() -> None:
    pipeline = single(AsyncFails)
    with init("debug") as rt, rt.start_inference(Inference(pipeline=pipeline)) as proc:
        with pytest.raises(CellError, match=r"cell 'c0' \(AsyncFails\) failed for sid 'a': KeyError: 'nothing for 4'") as failed:
            asyncio.run(proc.apredict({"x": 4}, sid="a"))
        assert failed.value.cause_type == "KeyError" and failed.value.ref == "c0"
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(AsyncWrongReturn))) as proc:
        with pytest.raises(CellError, match=r"call\(\) returned XIn; it must return YOut"):
            proc.predict({"x": 1}).result()


def test_apredict_validates_at_once_and_works_on_the_drivers_port() -> None:
    async def run(proc: Any) -> None:
        with pytest.raises(InputValidationError, match="sid must be a str"):
            await proc.apredict({"x": 1}, sid=7)
        with pytest.raises(InputValidationError, match="timeout must be a number"):
            await proc.apredict({"x": 1}, timeout=-1)
        port = proc.restricted()
        assert await port.apredict({"x": 1}, sid="p") == {"y": 1}
        assert await port.apredict({"x": 2}, sid="p") == {"y": 3}  # the same state as proc's requests of sid "p"
        assert await proc.apredict({"x": 3}, sid="p") == {"y": 6}

    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(AsyncTotal))) as proc:
        asyncio.run(run(proc))


def test_waiting_on_the_cells_loop_from_the_loop_itself_is_an_error_not_a_hang() -> None:
    async def outer() -> Any:
        inner = asyncio.sleep(0, result="never")
        return async_calls.run(inner, "cell 'x' call()")

    with pytest.raises(RuntimeError, match=r"cell 'x' call\(\) would run on the event loop of async cells from that loop's own thread.*apredict"):
        async_calls.run(outer(), "test")
    assert async_calls.run(asyncio.sleep(0, result=5), "test") == 5  # the loop still serves

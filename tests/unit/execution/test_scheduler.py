"""The scheduler's ordering guarantees with real worker threads: a sid's requests reach every cell in submit order."""

from __future__ import annotations

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Parameters
from rvai_sdk.execution import BatchingPolicy, Executor
from rvai_sdk.types import Integer, List
from tests.conftest import BatchRemember, Seen, XIn, YOut, chain_pipeline

pytestmark = pytest.mark.timeout(120)


@cell(state=Seen, concurrency=4)
class WideRemember(Cell):
    """Remember with four concurrent calls: per-sid exclusivity must keep each sid's calls one at a time, in order."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        context.state.xs = List[Integer]([*context.state.xs, inputs.x])
        return YOut(y=inputs.x)


@pytest.mark.parametrize("workers", [None, 0])
def test_each_sid_sees_its_requests_in_submit_order_through_a_concurrent_and_a_batched_cell(workers: int | None) -> None:
    sids, per_sid = 300, 6
    executor = Executor(
        chain_pipeline(WideRemember, BatchRemember),
        batching={"c1": BatchingPolicy(max_batch_size=16, max_batch_wait=0)},
        workers=workers,
    )
    executor.start()
    try:
        futures = [
            executor.submit({"x": Integer(1000 + round_ * sids + s)}, f"s{s}") for round_ in range(per_sid) for s in range(sids)
        ]
        results = [f.result() for f in futures]  # no timeout: with workers=0 the waiting caller runs the cells
        states = {f"s{s}": executor.get_state(f"s{s}") for s in range(sids)}
    finally:
        executor.stop()
    for s in range(sids):
        wanted = [1000 + round_ * sids + s for round_ in range(per_sid)]
        assert [int(x) for x in states[f"s{s}"]["c0"].xs] == wanted, f"sid s{s} at the concurrent cell"
        assert [int(x) for x in states[f"s{s}"]["c1"].xs] == wanted, f"sid s{s} at the batched cell"
    assert [int(r["y"]) for r in results] == [1000 + n for n in range(sids * per_sid)]

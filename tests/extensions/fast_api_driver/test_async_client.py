"""AsyncFastAPIClient against a real uvicorn server on loopback: the same answers and errors as FastAPIClient,
many requests in flight from one task."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

from rvai_sdk.exc import RvaiError
from rvai_sdk.extensions.drivers.fast_api_driver import AsyncFastAPIClient, FastAPIClient, FastAPIClientError, FastAPIDriver
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Image, Integer
from tests.conftest import require_extra
from tests.extensions.fast_api_driver._pipelines import http_pipeline

pytestmark = pytest.mark.timeout(60)

PICTURE = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)


def test_async_client_has_the_blocking_clients_surface_and_answers() -> None:
    sync_methods = {n for n in dir(FastAPIClient) if not n.startswith("_")} - {"close"}
    async_methods = {n for n in dir(AsyncFastAPIClient) if not n.startswith("_")} - {"aclose"}
    assert sync_methods == async_methods
    for name in sync_methods - {"base_url"}:
        assert asyncio.iscoroutinefunction(getattr(AsyncFastAPIClient, name)), name

    with init("debug") as rt, rt.start_inference(Inference(pipeline=http_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver)

        async def session() -> None:
            async with AsyncFastAPIClient(process=handle) as client:
                await client.wait(timeout=30)
                assert await client.health()
                assert (await client.pipeline())["name"] == "http-test"

                first = await client.predict({"x": 1, "image": PICTURE}, sid="a")
                assert first["count"] == Integer(1) and isinstance(first["flipped"], Image)
                np.testing.assert_array_equal(np.asarray(first["flipped"]), PICTURE[:, ::-1])

                # many in flight from one task: each sid counts its own requests
                many = await asyncio.gather(*(client.predict({"x": 2, "image": PICTURE}, sid=f"s{i % 3}") for i in range(9)))
                counts = sorted(int(r["count"]) for r in many)
                assert counts == [1, 1, 1, 2, 2, 2, 3, 3, 3]

                with pytest.raises(FastAPIClientError) as bad_input:
                    await client.predict({"x": "nope", "image": PICTURE})
                assert bad_input.value.status_code == 422 and bad_input.value.field == "inputs.x"
                with pytest.raises(FastAPIClientError, match="negative input -1") as cell_failed:
                    await client.predict({"x": -1, "image": PICTURE})
                assert cell_failed.value.status_code == 500 and cell_failed.value.cell == "check"

                batch = await client.predict_batch([({"x": 1, "image": PICTURE}, "b"), {"x": -5, "image": PICTURE}])
                assert isinstance(batch[0], dict) and batch[0]["count"] == 1
                assert isinstance(batch[1], FastAPIClientError) and batch[1].cell == "check"

                require_extra("PIL")
                from PIL import Image as PILImage

                png = io.BytesIO()
                PILImage.fromarray(PICTURE).save(png, format="PNG")
                uploaded = await client.predict_files({"x": 1}, {"image": png.getvalue()}, sid="f")
                assert uploaded["width"] == 3 and uploaded["height"] == 2

                task_id = await client.predict_task({"x": 4, "image": PICTURE}, sid="t")
                assert (await client.task_result(task_id, timeout=20))["checked"] == 4
                assert any(t["id"] == task_id for t in await client.tasks())
                await client.delete_task(task_id)
                with pytest.raises(FastAPIClientError) as gone:
                    await client.task(task_id)
                assert gone.value.status_code == 404
                failing = await client.predict_task({"x": -3, "image": PICTURE}, sid="t")
                with pytest.raises(FastAPIClientError, match="negative input -3") as task_failed:
                    await client.task_result(failing, timeout=20)
                assert task_failed.value.cell == "check"

            # the blocking client sees the same process and state
            with FastAPIClient(process=handle) as blocking:
                assert blocking.predict({"x": 1, "image": PICTURE}, sid="a")["count"] == 2

        asyncio.run(session())

        port = handle.get_service("http")["port"]
        proc.remove_driver("webapi")

        async def refused() -> None:
            async with AsyncFastAPIClient(host="127.0.0.1", port=port) as client:
                with pytest.raises(FastAPIClientError, match="failed: ConnectError") as error:
                    await client.predict({"x": 1, "image": PICTURE})
                assert error.value.status_code is None and isinstance(error.value, RvaiError)
                assert not await client.health()
                with pytest.raises(FastAPIClientError, match="not ready within"):
                    await client.wait(timeout=0.2)
            with pytest.raises(FastAPIClientError, match="STOPPED"):
                async with AsyncFastAPIClient(process=handle) as stopped:
                    await stopped.wait(timeout=5)

        asyncio.run(refused())
    with pytest.raises(FastAPIClientError, match=r"AsyncFastAPIClient needs process= .* or both host= and port="):
        AsyncFastAPIClient(host="127.0.0.1")

"""FastAPIClient and AsyncFastAPIClient: call a FastAPIDriver from Python, with typed values back.

Both have the same methods (the async one's are coroutines) and raise FastAPIClientError;
what they share (addresses, encoding, decoding, errors) is in ``_ClientBase``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from rvai_sdk import types as rtypes
from rvai_sdk._compat import require
from rvai_sdk.exc import DriverError, FastAPIClientError

from .parameters import MAX_WAIT

if TYPE_CHECKING:
    import httpx

    from rvai_sdk.runtime.driver_process import PipelineDriverProcess
else:
    httpx = require("httpx", extra="fastapi")

__all__ = ["AsyncFastAPIClient", "FastAPIClient", "FastAPIClientError"]

_TYPE_NAMES = {
    name: getattr(rtypes, name)
    for name in (
        "Integer Float String Boolean FloatRange IntegerRange Image BoundingBox Point Class Classes Detections Tensor".split()
    )
}


def _resolve_type(text: str) -> Any:
    """The value type named by ``type_name`` (``"List[Integer] | None"``), or ``None`` if unknown."""
    text = text.strip()
    if text.endswith(" | None"):
        inner = _resolve_type(text[: -len(" | None")])
        return None if inner is None else Optional[inner]
    match = re.fullmatch(r"(\w+)\[(.*)\]", text)
    if match is None:
        return _TYPE_NAMES.get(text)
    head, rest = match.group(1), match.group(2)
    if head == "Tensor":  # Tensor[float32, (None, 4)]: the JSON form carries the dtype and shape
        return rtypes.Tensor
    args, depth, start = [], 0, 0
    for i, ch in enumerate(rest):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            args.append(rest[start:i])
            start = i + 1
    args.append(rest[start:])
    resolved = [_resolve_type(a) for a in args]
    if any(r is None for r in resolved):
        return None
    generic = {"List": (rtypes.List, 1), "Dict": (rtypes.Dict, 2), "Enum": (rtypes.Enum, 1)}.get(head)
    if generic is None or len(resolved) != generic[1]:
        return None
    return generic[0][resolved[0] if len(resolved) == 1 else tuple(resolved)]


def _encode_value(value: Any) -> Any:
    if isinstance(value, rtypes.Value):
        return value.to_json()
    if isinstance(value, np.ndarray):
        return rtypes.Image(value).to_json()
    return value


def _batch_items(requests: Sequence[Mapping[str, Any] | tuple[Mapping[str, Any], str | None]]) -> list[dict[str, Any]]:
    items = []
    for item in requests:
        if isinstance(item, tuple):
            items.append(_ClientBase._request(item[0], item[1]))
        elif "inputs" in item and set(item) <= {"inputs", "sid"}:
            items.append(_ClientBase._request(item["inputs"], item.get("sid")))
        else:
            items.append(_ClientBase._request(item, None))
    return items


class _ClientBase:
    """What the blocking and the asyncio client share: the address, encoding, decoding and errors (no I/O)."""

    def __init__(
        self,
        process: PipelineDriverProcess | None,
        host: str | None,
        port: int | None,
        api_key: str | None,
    ) -> None:
        self._process = process
        if process is not None:
            try:
                record = process.get_service("http")
            except DriverError as exc:
                failed = self._driver_failure()
                raise failed or FastAPIClientError(str(exc)) from exc
            lan = record.get("taggedAddresses", {}).get("lan", record)
            host, port = str(lan["address"]), int(lan["port"])
        if host is None or port is None:
            raise FastAPIClientError(f"{type(self).__name__} needs process= (a driver handle) or both host= and port=")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._output_types: dict[str, Any] | None = None

    def _transport_error(self, method: str, path: str, exc: Exception) -> FastAPIClientError:
        return FastAPIClientError(
            f"{method} {self.base_url}{path} failed: {type(exc).__name__}: {exc}; is the driver running?"
        )

    def _body(self, method: str, path: str, response: Any) -> Any:
        """The JSON body of ``response`` (``None`` when empty), or raise its error."""
        if response.status_code >= 400:
            raise self._error(method, path, response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise FastAPIClientError(
                f"{method} {path}: the server answered {response.status_code} with a body that is not JSON",
                status_code=response.status_code,
            ) from exc

    def _error(self, method: str, path: str, response: Any) -> FastAPIClientError:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            error = {}
        server_message = str(error.get("message") or response.text[:500])
        where = f" (cell {error['cell']!r})" if error.get("cell") else f" (field {error['field']!r})" if error.get("field") else ""
        return FastAPIClientError(
            f"{method} {path} answered {response.status_code} {error.get('type', '')}{where}: {server_message}",
            status_code=response.status_code,
            error_type=error.get("type"),
            server_message=server_message,
            cell=error.get("cell"),
            field=error.get("field"),
            body=body,
        )

    def _set_types(self, description: Mapping[str, Any]) -> dict[str, Any]:
        outputs = description.get("outputs", {})
        self._output_types = {ref: _resolve_type(str(o.get("type", ""))) for ref, o in outputs.items()}
        return self._output_types

    def _decode_with(self, types: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
        decoded: dict[str, Any] = {}
        for ref, value in outputs.items():
            tp = types.get(ref)
            decoded[ref] = value if tp is None else rtypes.from_json(tp, value)
        return decoded

    @staticmethod
    def _request(inputs: Mapping[str, Any], sid: str | None) -> dict[str, Any]:
        return {"inputs": {ref: _encode_value(v) for ref, v in inputs.items()}, "sid": sid}

    @staticmethod
    def _form(inputs: Mapping[str, Any], files: Mapping[str, bytes], sid: str | None) -> dict[str, Any]:
        data = {ref: json.dumps(_encode_value(v)) for ref, v in inputs.items()}
        if sid is not None:
            data["sid"] = sid
        upload = {ref: (f"{ref}.bin", content, "application/octet-stream") for ref, content in files.items()}
        return {"data": data, "files": upload}

    def _batch_results(self, types: Mapping[str, Any], body: Mapping[str, Any]) -> list[dict[str, Any] | FastAPIClientError]:
        results: list[dict[str, Any] | FastAPIClientError] = []
        for i, result in enumerate(body["results"]):
            if result.get("error"):
                error = result["error"]
                results.append(
                    FastAPIClientError(
                        f"batch item {i} failed: {error.get('type')}: {error.get('message')}",
                        status_code=200,
                        error_type=error.get("type"),
                        server_message=error.get("message"),
                        cell=error.get("cell"),
                        field=error.get("field"),
                        body=result,
                    )
                )
            else:
                results.append(self._decode_with(types, result["outputs"]))
        return results

    @staticmethod
    def _task_body(inputs: Mapping[str, Any], sid: str | None, callback_url: str | None) -> dict[str, Any]:
        body = _ClientBase._request(inputs, sid)
        if callback_url is not None:
            body["callback_url"] = callback_url
        return body

    @staticmethod
    def _task_failed(task_id: str, record: Mapping[str, Any]) -> FastAPIClientError:
        error = record.get("error") or {}
        return FastAPIClientError(
            f"task {task_id} failed: {error.get('type')}: {error.get('message')}",
            status_code=200,
            error_type=error.get("type"),
            server_message=error.get("message"),
            cell=error.get("cell"),
            body=dict(record),
        )

    def _driver_failure(self) -> FastAPIClientError | None:
        """The error to raise at once when the driver handle shows the driver FAILED or STOPPED, else ``None``."""
        process = self._process
        if process is None:
            return None
        state = process.status.name
        if state not in ("FAILED", "STOPPED"):
            return None
        failure = process.failure or ""
        first = failure.splitlines()[0] if failure else ""
        if state == "FAILED":
            message = f"driver {process.ref!r} FAILED: {first}; its traceback is in the handle's .failure"
        else:
            message = f"driver {process.ref!r} is STOPPED; add it again and make a client from the new handle"
        return FastAPIClientError(message, error_type=state, server_message=failure or None)

    def _not_ready(self, timeout: float, last: FastAPIClientError | None) -> FastAPIClientError:
        return self._driver_failure() or FastAPIClientError(
            f"{self.base_url} was not ready within {timeout} s: {last}",
            status_code=last.status_code if last else None,
        )

    @staticmethod
    def _retry_ready(exc: FastAPIClientError) -> bool:
        """Whether ``GET /ready`` failing with ``exc`` is worth asking again (not up yet, or 503)."""
        return exc.status_code is None or exc.status_code == 503

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"


class FastAPIClient(_ClientBase):
    """Call a :class:`FastAPIDriver` from Python, with typed values back.

    Give the driver's handle (``process=``) or its address (``host=``, ``port=``).
    Values are sent in their JSON form (typed values and numpy images are encoded),
    and results come back as :mod:`rvai_sdk.types` values, decoded with the types the
    server's ``GET /pipeline`` names. Every failure, a refused connection included,
    raises :class:`FastAPIClientError` with the status code and the server's message.
    For asyncio code, :class:`AsyncFastAPIClient` has the same methods as coroutines.

    Args:
        process: the handle ``proc.add_driver(...)`` returned.
        host: the server's address (with ``port``), instead of ``process``.
        port: the server's port.
        api_key: the bearer token, when the server has one.
        timeout: seconds to wait for each HTTP response.

    Example::

        with FastAPIClient(process=http) as client:
            client.wait(timeout=10)
            client.predict({"x": 1}, sid="cam-1")    # {'y': Integer(2)}
    """

    def __init__(
        self,
        process: PipelineDriverProcess | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(process, host, port, api_key)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=self._headers)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(method, path, exc) from exc
        return self._body(method, path, response)

    def _types(self) -> dict[str, Any]:
        return self._output_types if self._output_types is not None else self._set_types(self.pipeline())

    def _decode(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        return self._decode_with(self._types(), outputs)

    # -- API ---------------------------------------------------------------------------------

    def wait(self, timeout: float = 30.0) -> None:
        """Block until ``GET /ready`` answers 200.

        Made from a driver handle (``process=``), it raises at once when the handle
        shows the driver FAILED (with the driver's error) or STOPPED, instead of
        waiting out ``timeout``.

        Raises:
            FastAPIClientError: not ready within ``timeout`` seconds (carries the last failure),
                or the driver FAILED or STOPPED (``error_type`` is ``"FAILED"``/``"STOPPED"``).
        """
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        last: FastAPIClientError | None = None
        for attempt in itertools.count():
            failed = self._driver_failure()
            if failed is not None:
                raise failed
            try:
                self._call("GET", "/ready")
                return
            except FastAPIClientError as exc:
                if not self._retry_ready(exc):
                    raise
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            pause.wait(min(0.01 * 2**min(attempt, 5), remaining))
        raise self._not_ready(timeout, last)

    def health(self) -> bool:
        """Whether ``GET /health`` answers (the server is up)."""
        try:
            self._call("GET", "/health")
        except FastAPIClientError:
            return False
        return True

    def pipeline(self) -> dict[str, Any]:
        """The pipeline's description (``GET /pipeline``)."""
        description: dict[str, Any] = self._call("GET", "/pipeline")
        return description

    def predict(self, inputs: Mapping[str, Any], sid: str | None = None) -> dict[str, Any]:
        """Run one request; output ref → typed value.

        Raises:
            FastAPIClientError: any failure (422 bad input with ``field``, 500 cell failure with ``cell``, 503...).
        """
        body = self._call("POST", "/predict", json=self._request(inputs, sid))
        return self._decode(body["outputs"])

    def predict_files(
        self, inputs: Mapping[str, Any], files: Mapping[str, bytes], sid: str | None = None
    ) -> dict[str, Any]:
        """Run one request as a multipart upload: ``files`` maps image inputs to file bytes (PNG, JPEG...)."""
        body = self._call("POST", "/predict", **self._form(inputs, files, sid))
        return self._decode(body["outputs"])

    def predict_batch(
        self, requests: Sequence[Mapping[str, Any] | tuple[Mapping[str, Any], str | None]]
    ) -> list[dict[str, Any] | FastAPIClientError]:
        """Run many requests in one call; per item, its typed outputs or the error that failed it alone.

        Args:
            requests: each an inputs mapping, an ``(inputs, sid)`` pair, or ``{"inputs": ..., "sid": ...}``.
        """
        body = self._call("POST", "/predict/batch", json={"requests": _batch_items(requests)})
        return self._batch_results(self._types(), body)

    def predict_task(
        self, inputs: Mapping[str, Any], sid: str | None = None, callback_url: str | None = None
    ) -> str:
        """Queue an asynchronous task; its id."""
        task: dict[str, Any] = self._call("POST", "/tasks", json=self._task_body(inputs, sid, callback_url))
        return str(task["id"])

    def task(self, task_id: str, wait: float = 0.0) -> dict[str, Any]:
        """A task's status record (``GET /tasks/{id}``), waiting up to ``wait`` seconds for it to finish."""
        record: dict[str, Any] = self._call("GET", f"/tasks/{task_id}", params={"wait": wait} if wait else None)
        return record

    def tasks(self) -> list[dict[str, Any]]:
        """Every task the server keeps."""
        return list(self._call("GET", "/tasks")["tasks"])

    def delete_task(self, task_id: str) -> None:
        """Forget a task."""
        self._call("DELETE", f"/tasks/{task_id}")

    def task_result(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for a task and return its typed outputs.

        Raises:
            FastAPIClientError: the task failed (its error), is unknown (404), or did not finish in ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            record = self.task(task_id, wait=max(0.0, min(remaining, MAX_WAIT)))
            if record["status"] == "done":
                return self._decode(record["result"])
            if record["status"] == "failed":
                raise self._task_failed(task_id, record)
            if remaining <= 0:
                raise FastAPIClientError(f"task {task_id} did not finish within {timeout} s (status {record['status']})")

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> FastAPIClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncFastAPIClient(_ClientBase):
    """:class:`FastAPIClient` for asyncio code: the same methods, as coroutines, on ``httpx.AsyncClient``.

    Many requests can be in flight from one task (``asyncio.gather``) over one
    connection pool. Arguments, results and errors are those of
    :class:`FastAPIClient`; close it with ``await client.aclose()`` or use it as
    ``async with``. Make it inside the event loop that uses it.

    Args:
        process: the handle ``proc.add_driver(...)`` returned.
        host: the server's address (with ``port``), instead of ``process``.
        port: the server's port.
        api_key: the bearer token, when the server has one.
        timeout: seconds to wait for each HTTP response.

    Example::

        async with AsyncFastAPIClient(process=http) as client:
            await client.wait(timeout=10)
            results = await asyncio.gather(*(client.predict({"x": i}, sid=f"cam-{i}") for i in range(8)))
    """

    def __init__(
        self,
        process: PipelineDriverProcess | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(process, host, port, api_key)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=self._headers)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(method, path, exc) from exc
        return self._body(method, path, response)

    async def _types(self) -> dict[str, Any]:
        return self._output_types if self._output_types is not None else self._set_types(await self.pipeline())

    async def _decode(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        return self._decode_with(await self._types(), outputs)

    # -- API ---------------------------------------------------------------------------------

    async def wait(self, timeout: float = 30.0) -> None:
        """Wait (without blocking the loop) until ``GET /ready`` answers 200; see :meth:`FastAPIClient.wait`.

        Raises:
            FastAPIClientError: not ready within ``timeout`` seconds, or the driver FAILED or STOPPED.
        """
        deadline = time.monotonic() + timeout
        last: FastAPIClientError | None = None
        for attempt in itertools.count():
            failed = self._driver_failure()
            if failed is not None:
                raise failed
            try:
                await self._call("GET", "/ready")
                return
            except FastAPIClientError as exc:
                if not self._retry_ready(exc):
                    raise
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(0.01 * 2**min(attempt, 5), remaining))
        raise self._not_ready(timeout, last)

    async def health(self) -> bool:
        """Whether ``GET /health`` answers (the server is up)."""
        try:
            await self._call("GET", "/health")
        except FastAPIClientError:
            return False
        return True

    async def pipeline(self) -> dict[str, Any]:
        """The pipeline's description (``GET /pipeline``)."""
        description: dict[str, Any] = await self._call("GET", "/pipeline")
        return description

    async def predict(self, inputs: Mapping[str, Any], sid: str | None = None) -> dict[str, Any]:
        """Run one request; output ref → typed value.

        Raises:
            FastAPIClientError: any failure (422 bad input with ``field``, 500 cell failure with ``cell``, 503...).
        """
        body = await self._call("POST", "/predict", json=self._request(inputs, sid))
        return await self._decode(body["outputs"])

    async def predict_files(
        self, inputs: Mapping[str, Any], files: Mapping[str, bytes], sid: str | None = None
    ) -> dict[str, Any]:
        """Run one request as a multipart upload: ``files`` maps image inputs to file bytes (PNG, JPEG...)."""
        body = await self._call("POST", "/predict", **self._form(inputs, files, sid))
        return await self._decode(body["outputs"])

    async def predict_batch(
        self, requests: Sequence[Mapping[str, Any] | tuple[Mapping[str, Any], str | None]]
    ) -> list[dict[str, Any] | FastAPIClientError]:
        """Run many requests in one call; per item, its typed outputs or the error that failed it alone."""
        body = await self._call("POST", "/predict/batch", json={"requests": _batch_items(requests)})
        return self._batch_results(await self._types(), body)

    async def predict_task(
        self, inputs: Mapping[str, Any], sid: str | None = None, callback_url: str | None = None
    ) -> str:
        """Queue an asynchronous task; its id."""
        task: dict[str, Any] = await self._call("POST", "/tasks", json=self._task_body(inputs, sid, callback_url))
        return str(task["id"])

    async def task(self, task_id: str, wait: float = 0.0) -> dict[str, Any]:
        """A task's status record (``GET /tasks/{id}``), waiting up to ``wait`` seconds for it to finish."""
        record: dict[str, Any] = await self._call("GET", f"/tasks/{task_id}", params={"wait": wait} if wait else None)
        return record

    async def tasks(self) -> list[dict[str, Any]]:
        """Every task the server keeps."""
        return list((await self._call("GET", "/tasks"))["tasks"])

    async def delete_task(self, task_id: str) -> None:
        """Forget a task."""
        await self._call("DELETE", f"/tasks/{task_id}")

    async def task_result(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for a task and return its typed outputs.

        Raises:
            FastAPIClientError: the task failed (its error), is unknown (404), or did not finish in ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            record = await self.task(task_id, wait=max(0.0, min(remaining, MAX_WAIT)))
            if record["status"] == "done":
                return await self._decode(record["result"])
            if record["status"] == "failed":
                raise self._task_failed(task_id, record)
            if remaining <= 0:
                raise FastAPIClientError(f"task {task_id} did not finish within {timeout} s (status {record['status']})")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFastAPIClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

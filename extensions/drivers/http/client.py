"""FastAPIClient: call a FastAPIDriver from Python, with typed values back; its errors are FastAPIClientError."""

from __future__ import annotations

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

__all__ = ["FastAPIClient", "FastAPIClientError"]

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


class FastAPIClient:
    """Call a :class:`FastAPIDriver` from Python, with typed values back.

    Give the driver's handle (``process=``) or its address (``host=``, ``port=``).
    Values are sent in their JSON form (typed values and numpy images are encoded),
    and results come back as :mod:`rvai_sdk.types` values, decoded with the types the
    server's ``GET /pipeline`` names. Every failure, a refused connection included,
    raises :class:`FastAPIClientError` with the status code and the server's message.

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
            raise FastAPIClientError("FastAPIClient needs process= (a driver handle) or both host= and port=")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        self._output_types: dict[str, Any] | None = None

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise FastAPIClientError(
                f"{method} {self.base_url}{path} failed: {type(exc).__name__}: {exc}; is the driver running?"
            ) from exc
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

    def _types(self) -> dict[str, Any]:
        if self._output_types is None:
            outputs = self.pipeline().get("outputs", {})
            self._output_types = {ref: _resolve_type(str(o.get("type", ""))) for ref, o in outputs.items()}
        return self._output_types

    def _decode(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        types = self._types()
        decoded: dict[str, Any] = {}
        for ref, value in outputs.items():
            tp = types.get(ref)
            decoded[ref] = value if tp is None else rtypes.from_json(tp, value)
        return decoded

    @staticmethod
    def _request(inputs: Mapping[str, Any], sid: str | None) -> dict[str, Any]:
        return {"inputs": {ref: _encode_value(v) for ref, v in inputs.items()}, "sid": sid}

    # -- API ---------------------------------------------------------------------------------

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
                if exc.status_code is not None and exc.status_code not in (503,):
                    raise
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            pause.wait(min(0.01 * 2**min(attempt, 5), remaining))
        raise self._driver_failure() or FastAPIClientError(
            f"{self.base_url} was not ready within {timeout} s: {last}",
            status_code=last.status_code if last else None,
        )

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
        data = {ref: json.dumps(_encode_value(v)) for ref, v in inputs.items()}
        if sid is not None:
            data["sid"] = sid
        upload = {ref: (f"{ref}.bin", content, "application/octet-stream") for ref, content in files.items()}
        body = self._call("POST", "/predict", data=data, files=upload)
        return self._decode(body["outputs"])

    def predict_batch(
        self, requests: Sequence[Mapping[str, Any] | tuple[Mapping[str, Any], str | None]]
    ) -> list[dict[str, Any] | FastAPIClientError]:
        """Run many requests in one call; per item, its typed outputs or the error that failed it alone.

        Args:
            requests: each an inputs mapping, an ``(inputs, sid)`` pair, or ``{"inputs": ..., "sid": ...}``.
        """
        items = []
        for item in requests:
            if isinstance(item, tuple):
                items.append(self._request(item[0], item[1]))
            elif "inputs" in item and set(item) <= {"inputs", "sid"}:
                items.append(self._request(item["inputs"], item.get("sid")))
            else:
                items.append(self._request(item, None))
        body = self._call("POST", "/predict/batch", json={"requests": items})
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
                results.append(self._decode(result["outputs"]))
        return results

    def predict_task(
        self, inputs: Mapping[str, Any], sid: str | None = None, callback_url: str | None = None
    ) -> str:
        """Queue an asynchronous task; its id."""
        body = self._request(inputs, sid)
        if callback_url is not None:
            body["callback_url"] = callback_url
        task: dict[str, Any] = self._call("POST", "/tasks", json=body)
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
                error = record.get("error") or {}
                raise FastAPIClientError(
                    f"task {task_id} failed: {error.get('type')}: {error.get('message')}",
                    status_code=200,
                    error_type=error.get("type"),
                    server_message=error.get("message"),
                    cell=error.get("cell"),
                    body=record,
                )
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

    def __repr__(self) -> str:
        return f"<FastAPIClient {self.base_url}>"

"""The pipeline's inputs and outputs in JSON: decoding requests with field paths, encoding results, schemas.

A request is decoded and validated here once (each input from its JSON form into its
typed value, sids and image sizes checked against the driver's limits); the typed
inputs then go to the inference process as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rvai_sdk import types as rtypes
from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._json import loads as bounded_json

from .errors import json_type, unprocessable

if TYPE_CHECKING:
    from rvai_sdk.pipeline.graph import InputSpec, OutputSpec, Pipeline

__all__ = ["Codec", "identifier", "check_sid", "form_value"]


def identifier(name: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", name)
    ident = "".join(w[:1].upper() + w[1:] for w in words) or "Pipeline"
    return ident if not ident[0].isdigit() else f"P{ident}"


def _field_meta(pipeline: Pipeline, spec: InputSpec | OutputSpec) -> dict[str, Any]:
    """Title and description of the cell port behind a pipeline input or output."""
    if hasattr(spec, "targets"):
        if not spec.targets:
            return {}
        cell, port = spec.targets[0]
        props = pipeline.spec(cell).inputs.json_schema().get("properties", {})
    else:
        cell, port = spec.cell, spec.port
        props = pipeline.spec(cell).outputs.json_schema().get("properties", {})
    meta = props.get(port, {})
    return {k: meta[k] for k in ("title", "description") if meta.get(k)}


class Codec:
    """The pipeline's inputs and outputs in JSON: decoding with field paths, encoding, schemas."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.inputs = dict(pipeline.inputs)
        self.outputs = dict(pipeline.outputs)
        self.image_inputs = {ref for ref, s in self.inputs.items() if rtypes.unwrap_optional(s.type)[0] is rtypes.Image}
        self.image_outputs = any("Image" in rtypes.type_name(s.type) for s in self.outputs.values())
        self.input_schemas = {ref: {**_field_meta(pipeline, s), **s.json_schema()} for ref, s in self.inputs.items()}
        self.output_schemas = {ref: {**_field_meta(pipeline, s), **s.json_schema()} for ref, s in self.outputs.items()}

    def decode(self, obj: Any, where: str = "inputs") -> dict[str, Any]:
        """Typed inputs from their JSON form.

        Raises:
            HTTPError: 422 naming the field path (``inputs.x``, ``inputs.boxes[2].xmin``).
        """
        if not isinstance(obj, dict):
            raise unprocessable(f"{where} must be an object of input ref to value, got {json_type(obj)}", where)
        specs = self.inputs
        for key in obj:
            if key not in specs:
                raise unprocessable(
                    f"pipeline {self.pipeline.name!r} has no input {key!r}; its inputs are: {', '.join(specs) or '(none)'}",
                    f"{where}.{key}",
                )
        decoded: dict[str, Any] = {}
        for ref, spec in specs.items():
            if ref not in obj:
                raise unprocessable(
                    f"missing input {ref!r} ({rtypes.type_name(spec.type)}); the inputs are: {', '.join(specs)}",
                    f"{where}.{ref}",
                )
            value = obj[ref]
            try:
                if isinstance(value, rtypes.Value):  # already typed (multipart images)
                    decoded[ref] = rtypes.coerce(spec.type, value, like=spec.like)
                else:
                    decoded[ref] = rtypes.from_json(spec.type, value, like=spec.like)
            except InputValidationError as exc:
                path = f"{where}.{ref}{exc.field or ''}"
                raise unprocessable(f"input {ref + (exc.field or '')!r}: {exc.detail}", path) from exc
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                raise unprocessable(f"input {ref!r}: {type(exc).__name__}: {exc}", f"{where}.{ref}") from exc
        return decoded

    def encode(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON form of a result."""
        return {ref: rtypes.to_json(value) for ref, value in outputs.items()}

    def describe(self) -> dict[str, Any]:
        """What ``GET /pipeline`` returns."""
        description = self.pipeline.describe()

        def ports(specs: Mapping[str, Any], schemas: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
            return {
                ref: {
                    "type": rtypes.type_name(spec.type),
                    "title": schemas[ref].get("title", ref),
                    "description": schemas[ref].get("description", ""),
                    "schema": schemas[ref],
                }
                for ref, spec in specs.items()
            }

        return {
            "name": self.pipeline.name,
            "cells": description["cells"],
            "inputs": ports(self.inputs, self.input_schemas),
            "outputs": ports(self.outputs, self.output_schemas),
            "input_schema": description["inputs"],
            "output_schema": description["outputs"],
        }

    def example_inputs(self) -> dict[str, Any]:
        """A valid request's inputs, from each type's ``fake``; ``None`` where a type has none."""
        rng = np.random.default_rng(0)
        example: dict[str, Any] = {}
        for ref, spec in self.inputs.items():
            try:
                value = rtypes.fake(spec.type, rng, like=spec.like)
                if isinstance(value, rtypes.Image):
                    value = rtypes.Image(np.zeros((2, 2, 3), np.uint8))
                example[ref] = rtypes.to_json(value)
            except Exception:  # a type without fake(): leave a placeholder
                example[ref] = None
        return example

    # -- whole requests --------------------------------------------------------------------------

    def parse_body(
        self, body: bytes, header_sid: str | None, *, max_sid_length: int, max_image_pixels: int | None
    ) -> tuple[dict[str, Any], str | None]:
        """A JSON ``{"inputs": ..., "sid": ...}`` body → typed inputs and sid.

        Raises:
            HTTPError: 422 naming the offending field.
        """
        return self.request(
            self.json_object(body), header_sid, max_sid_length=max_sid_length, max_image_pixels=max_image_pixels
        )

    @staticmethod
    def json_object(body: bytes) -> dict[str, Any]:
        """The body as a JSON object (422 when it is not valid JSON, or not an object)."""
        try:
            obj = bounded_json(body)
        except (ValueError, RecursionError) as exc:  # RecursionError: a backstop, the depth is checked first
            raise unprocessable(f"the body is not valid JSON: {exc}", None) from exc
        if not isinstance(obj, dict):
            raise unprocessable(f"the body must be a JSON object, got {json_type(obj)}", None)
        return obj

    def request(
        self,
        obj: Mapping[str, Any],
        header_sid: str | None,
        where: str = "",
        extra: Iterable[str] = (),
        *,
        max_sid_length: int,
        max_image_pixels: int | None,
    ) -> tuple[dict[str, Any], str | None]:
        """One request object (``inputs``, ``sid``, and the ``extra`` fields allowed) → typed inputs and sid.

        Args:
            obj: the request object.
            header_sid: the ``X-State-Id`` header, used when the body has no sid.
            where: the path prefix of the request in the body (``"requests[2]."``), for messages.
            extra: further fields allowed (and ignored here), such as ``callback_url``.
            max_sid_length: the longest sid accepted.
            max_image_pixels: the most pixels of an image input (``None``: ``Image.max_pixels``).

        Raises:
            HTTPError: 422 naming the offending field.
        """
        allowed = {"inputs", "sid", *extra}
        for key in obj:
            if key not in allowed:
                raise unprocessable(f"unknown field {key!r}; a request has: {', '.join(sorted(allowed))}", f"{where}{key}")
        if "inputs" not in obj:
            raise unprocessable("missing field 'inputs' (an object of input ref to value)", f"{where}inputs")
        sid = obj.get("sid")
        if sid is None:
            sid = header_sid
            check_sid(sid, "X-State-Id", max_sid_length)
        elif not isinstance(sid, str):
            raise unprocessable(f"sid must be a string or null, got {json_type(sid)}", f"{where}sid")
        else:
            check_sid(sid, f"{where}sid", max_sid_length)
        with rtypes.Image.pixel_limit(max_image_pixels):
            return self.decode(obj["inputs"], f"{where}inputs"), sid


def check_sid(sid: str | None, field: str, limit: int) -> None:
    """Refuse a sid longer than ``limit`` (``max_sid_length``) with 422, before it costs the inference process memory."""
    if sid is not None and len(sid) > limit:
        where = "the X-State-Id header" if field == "X-State-Id" else f"field {field!r}"
        raise unprocessable(
            f"the sid in {where} has {len(sid)} characters, more than the {limit} this server takes; use a "
            "shorter id (e.g. a hash of it), or raise the driver parameter max_sid_length",
            field,
        )


def form_value(text: str) -> Any:
    """A non-file multipart field: its JSON value, else the text itself (a plain string, a base64 image)."""
    try:
        return bounded_json(text)
    except (ValueError, RecursionError):
        return text

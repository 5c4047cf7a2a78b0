"""The API's pydantic models, generated from the pipeline's typed inputs and outputs, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

from rvai_sdk._compat import require

from .codec import Codec, identifier

if TYPE_CHECKING:
    import fastapi.openapi.utils as fastapi_openapi
    import pydantic
    import pydantic.json_schema as pydantic_json_schema
else:
    pydantic = require("pydantic", extra="fastapi")
    fastapi_openapi = require("fastapi.openapi.utils", extra="fastapi")
    pydantic_json_schema = require("pydantic.json_schema", extra="fastapi")

__all__ = ["models", "openapi_document", "request_body"]


def models(codec: Codec) -> dict[str, Any]:
    """Pydantic models of the API, generated from the pipeline's input and output types."""
    create_model: Any = pydantic.create_model  # field specs built at run time; typed loosely on purpose
    Field = pydantic.Field
    WithJsonSchema = pydantic.WithJsonSchema
    ConfigDict = pydantic.ConfigDict
    base = identifier(codec.pipeline.name)

    def port_model(name: str, schemas: Mapping[str, dict[str, Any]], doc: str) -> Any:
        fields: dict[str, Any] = {}
        for i, (ref, schema) in enumerate(schemas.items()):
            fields[f"f{i}"] = (Annotated[Any, WithJsonSchema(schema)], Field(..., alias=ref))
        return create_model(name, __config__=ConfigDict(extra="forbid", title=name), __doc__=doc, **fields)

    inputs = port_model(f"{base}Inputs", codec.input_schemas, f"The inputs of pipeline {codec.pipeline.name!r}.")
    outputs = port_model(f"{base}Outputs", codec.output_schemas, f"The outputs of pipeline {codec.pipeline.name!r}.")
    sid = (Optional[str], Field(None, description="state id: requests of one sid share cell state, in order"))
    error_body = create_model(
        "ErrorBody",
        type=(str, Field(..., description="the error's type, e.g. InputValidationError or CellError")),
        message=(str, ...),
        field=(Optional[str], Field(None, description="the offending field path, for a 422")),
        cell=(Optional[str], Field(None, description="the failing cell's ref, for a cell failure")),
        traceback=(Optional[str], Field(None, description="the cell's traceback, when include_traceback is on")),
    )
    error = create_model("ErrorResponse", error=(error_body, ...))
    predict_request = create_model(
        f"{base}PredictRequest", __config__=ConfigDict(extra="forbid"), inputs=(inputs, ...), sid=sid
    )
    predict_response = create_model(f"{base}PredictResponse", outputs=(outputs, ...), sid=sid)
    batch_request = create_model(
        f"{base}BatchRequest", __config__=ConfigDict(extra="forbid"), requests=(list[predict_request], ...)  # type: ignore[valid-type]
    )
    batch_item = create_model(
        f"{base}BatchResult", outputs=(Optional[outputs], None), error=(Optional[error_body], None), sid=sid
    )
    batch_response = create_model(f"{base}BatchResponse", results=(list[batch_item], ...))  # type: ignore[valid-type]
    task_request = create_model(
        f"{base}TaskRequest",
        __config__=ConfigDict(extra="forbid"),
        inputs=(inputs, ...),
        sid=sid,
        callback_url=(Optional[str], Field(None, description="http(s) URL that receives the final status by POST")),
    )
    callback = create_model(
        "TaskCallback",
        url=(str, ...),
        status=(Literal["pending", "delivered", "failed"], ...),
        attempts=(int, ...),
        last_error=(Optional[str], None),
    )
    task = create_model(
        f"{base}Task",
        id=(str, ...),
        status=(Literal["pending", "running", "done", "failed"], ...),
        sid=sid,
        received=(str, Field(..., description="ISO 8601 UTC")),
        started=(Optional[str], None),
        finished=(Optional[str], None),
        expires=(Optional[str], Field(None, description="when a finished task is forgotten")),
        result=(Optional[outputs], None),
        error=(Optional[error_body], None),
        callback=(Optional[callback], None),
    )
    task_list = create_model(f"{base}TaskList", tasks=(list[task], ...))  # type: ignore[valid-type]
    return {
        "inputs": inputs,
        "outputs": outputs,
        "error": error,
        "predict_request": predict_request,
        "predict_response": predict_response,
        "batch_request": batch_request,
        "batch_response": batch_response,
        "task_request": task_request,
        "task": task,
        "task_list": task_list,
    }


def request_body(codec: Codec, model: Any, multipart: bool = False) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route taking ``model`` as JSON (and, with ``multipart``, a form)."""
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    if multipart:
        props: dict[str, Any] = {}
        for ref, schema in codec.input_schemas.items():
            if ref in codec.image_inputs:
                props[ref] = {"type": "string", "format": "binary", "description": "an image file (PNG, ...)"}
            else:
                props[ref] = {"type": "string", "description": f"JSON text of {schema.get('title', ref)}"}
        props["sid"] = {"type": "string"}
        content["multipart/form-data"] = {
            "schema": {"type": "object", "properties": props, "required": list(codec.input_schemas)}
        }
    return {"requestBody": {"required": True, "content": content}}


def openapi_document(app: Any, routes: Sequence[Any], api_models: dict[str, Any], api_key: bool) -> dict[str, Any]:
    """The OpenAPI document of ``routes``, with the pipeline's request models in its components.

    Args:
        app: the FastAPI app (title, version, description).
        routes: the routes to document, in order.
        api_models: what :func:`models` returned.
        api_key: whether the server needs a bearer token (every route but ``/health`` then says so).
    """
    doc = fastapi_openapi.get_openapi(title=app.title, version=app.version, description=app.description, routes=routes)
    request_models = [api_models["predict_request"], api_models["batch_request"], api_models["task_request"]]
    _, defs = pydantic_json_schema.models_json_schema(
        [(model, "validation") for model in request_models], ref_template="#/components/schemas/{model}"
    )
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(defs.get("$defs", {}))
    if api_key:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, ops in doc["paths"].items():
            if path != "/health":
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
    return doc

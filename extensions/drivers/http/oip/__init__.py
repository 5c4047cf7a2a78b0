"""The Open Inference Protocol (KServe "V2", spoken by Triton) over HTTP/REST, beside the FastAPIDriver's own routes.

- ``codec``: the type mapping; decoding requests (JSON tensors, binary data), encoding answers.
- ``routes``: the ``/v2`` routes, mounted on the driver's FastAPI app by :func:`mount`.

Triton's and KServe's clients (``tritonclient.http``, ``InferenceRESTClient``) work against
a pipeline unchanged: the model is the pipeline (its name; version ``"1"``), its inputs
and outputs are tensors, described from the pipeline's types.

=====================================  =====================================================
route                                  answer
=====================================  =====================================================
``GET /v2``                            server metadata: name, version, extensions
``GET /v2/health/live``                200 while the server is up (no API key needed)
``GET /v2/health/ready``               200 when the inference process is ready, else 400
``GET /v2/models/{name}``              model metadata: inputs and outputs as tensors
``GET /v2/models/{name}/ready``        as ``/v2/health/ready``
``GET /v2/models/{name}/config``       a Triton-style model configuration
``POST /v2/models/{name}/infer``       inference: JSON tensors, or the binary-data extension
=====================================  =====================================================

Each model route also answers under ``/v2/models/{name}/versions/1/...``.

Type mapping (a pipeline port ↔ a V2 tensor):

==========================================  ======================  ==============================
rvai_sdk type                               V2 datatype             shape
==========================================  ======================  ==============================
``Tensor[dtype, shape]``                    the dtype's             the shape, ``-1`` for ``None``
``Tensor`` (any dtype)                      any numeric one         any (metadata: ``[-1]``)
``Image``                                   UINT8 (or BYTES: a      ``[H, W, C]`` (``[H, W]``,
                                            PNG/JPEG file, input)   ``[1, H, W, C]`` accepted)
``Integer``, ``IntegerRange``               INT64 (inputs: any int) ``[1]``
``Float``, ``FloatRange``                   FP64 (inputs: any num)  ``[1]``
``Boolean``                                 BOOL                    ``[1]``
``String``                                  BYTES (UTF-8)           ``[1]``
anything else (``BoundingBox``,             BYTES holding the       ``[1]``
``Detections``, ``List``, ``Dict``, enums)  value's JSON form
==========================================  ======================  ==============================

An optional input (``T | None``) may be left out (it is ``None``); an output that is
``None`` is left out of the answer. Request parameters: ``sequence_id`` (or ``sid``, a
string) is the request's sid; ``sequence_start`` first drops any state kept for it,
``sequence_end`` drops it once the request is answered; a request without one is one-off.
``timeout`` (microseconds, as Triton's) is the request's deadline.

Errors answer ``{"error": "<message>"}`` naming the input or output: 400 for a bad
request, 404 for an unknown model, version or route, 413 for a body too large, 500
when a cell failed, 503 when the inference process cannot be reached, 504 past the
deadline.
"""

from __future__ import annotations

from .codec import DATATYPES, VERSION, V2Codec, V2Request, datatype_of
from .routes import V2Routes, error_answer, is_v2, mount, route_label

__all__ = ["DATATYPES", "VERSION", "V2Codec", "V2Request", "V2Routes", "datatype_of", "error_answer", "is_v2", "mount", "route_label"]

"""The Open Inference Protocol (KServe "V2", Triton's gRPC API) over gRPC, served by :class:`GrpcDriver`.

- ``proto/``: ``rvai_sdk_inference.proto`` (the protocol's messages and the methods of
  ``inference.GRPCInferenceService`` served) and the module generated from it with
  grpcio-tools (the proto's header says how, and why its package is ``rvai_sdk.inference``).
- ``codec``: a ``ModelInferRequest`` → the typed inputs, the outputs → a ``ModelInferResponse``,
  through the same transport-neutral codec (``drivers/_v2.py``) as the HTTP ``/v2`` routes, so
  each type maps to the same tensor over both.
- ``service``: the servicer: readiness, metadata, model configuration, ``ModelInfer`` and
  ``ModelStreamInfer``, and how errors become gRPC status codes.

Arrays travel in ``raw_input_contents`` / ``raw_output_contents`` (what ``tritonclient.grpc``
sends and reads); an input may also come in its typed ``contents``. Answers always carry
raw contents.

==============================================  ==========================================
the failure                                     status code (the message names it)
==============================================  ==========================================
bad input, output, parameter or datatype/shape  ``INVALID_ARGUMENT``
a message that is not the method's protobuf     ``INVALID_ARGUMENT``
another model or version                        ``NOT_FOUND``
a cell failed                                   ``INTERNAL`` (the cell's ref and exception)
the inference process cannot be reached         ``UNAVAILABLE``
the sid's stored state cannot be read back      ``FAILED_PRECONDITION`` (drop that sid's state)
past the request's deadline                     ``DEADLINE_EXCEEDED``
a message past ``max_message_bytes``            ``RESOURCE_EXHAUSTED`` (gRPC's own check)
no or a wrong bearer token (``api_key``)        ``UNAUTHENTICATED``
a bug in the driver                             ``INTERNAL`` (the exception's type only)
==============================================  ==========================================
"""

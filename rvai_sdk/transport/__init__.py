"""How requests, results and arrays reach an inference process: one :class:`~rvai_sdk.transport.link.Link`.

- :mod:`~rvai_sdk.transport.link`: the ``Link`` interface (submit → future, control call,
  readiness, close) and the control methods every link answers.
- :mod:`~rvai_sdk.transport.inproc`: ``InProcessLink``, the executor in this process (debug runtime).
- :mod:`~rvai_sdk.transport.client` / :mod:`~rvai_sdk.transport.server`: ``UnixLink`` and
  the inference process's side of it (local runtime), over
  :mod:`~rvai_sdk.transport.channel` (framed, authenticated Unix-socket connections; the
  standard pickler with protocol 5; coalesced sends) and :mod:`~rvai_sdk.transport.shm`
  (a reusable pool of anonymous shared-memory slots for large arrays, freed by the kernel
  whatever crashes).
- :mod:`~rvai_sdk.transport.ray_link` / :mod:`~rvai_sdk.transport.ray_replica`: ``RayLink``
  and the replica actor's side of it (ray runtime), over :mod:`~rvai_sdk.transport._ray_routes`
  (routing and Ray's errors, shared by both sides) and :mod:`~rvai_sdk.transport._ray_outbox`
  (an actor's ``(ok, value)`` outcomes and the outbox a poll empties). Ray is imported only
  inside functions.
"""

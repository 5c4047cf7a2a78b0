"""How requests, results and arrays cross process boundaries.

- :mod:`~rvai_sdk.transport.channel`: framed, authenticated Unix-socket connections; the
  standard pickler with protocol 5 (no dill per request); coalesced sends.
- :mod:`~rvai_sdk.transport.shm`: a reusable pool of anonymous shared-memory slots for
  large arrays, freed by the kernel whatever crashes.
- :mod:`~rvai_sdk.transport.server` / :mod:`~rvai_sdk.transport.client`: an executor
  served to the processes that feed it.
"""

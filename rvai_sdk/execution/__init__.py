"""The executor: runs a pipeline for many concurrent requests and owns per-sid state."""

from rvai_sdk.execution.executor import BatchingPolicy, Executor, resolve_parameters
from rvai_sdk.execution.state import StateEntry, StateStore

__all__ = ["BatchingPolicy", "Executor", "StateEntry", "StateStore", "resolve_parameters"]

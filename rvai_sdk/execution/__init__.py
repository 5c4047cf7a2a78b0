"""The executor: runs a pipeline for many concurrent requests and owns per-sid state."""

from rvai_sdk.execution.batching import BatchFormer, BatchingPolicy
from rvai_sdk.execution.executor import Executor
from rvai_sdk.execution.parameters import resolve_parameters
from rvai_sdk.execution.state import StateEntry, StateStore
from rvai_sdk.execution.stats import ExecutorStats, merge_stats

__all__ = [
    "BatchFormer",
    "BatchingPolicy",
    "Executor",
    "ExecutorStats",
    "StateEntry",
    "StateStore",
    "merge_stats",
    "resolve_parameters",
]

"""Kept import path: the driver's port lives in :mod:`rvai_sdk.drivers.port` (drivers never import runtimes)."""

from rvai_sdk.drivers.port import (
    DEFAULT_MAX_SID_LENGTH,
    RestrictedInferenceProcess,
    check_request,
    check_sid,
    check_timeout,
)

__all__ = ["RestrictedInferenceProcess", "check_request", "check_sid", "check_timeout", "DEFAULT_MAX_SID_LENGTH"]

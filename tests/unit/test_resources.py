"""Resource requests: port names a user would write."""

from __future__ import annotations

import pytest

from rvai_sdk.exc import ParameterError
from rvai_sdk.resources import DriverResourcesRequest


def test_port_names_are_any_non_empty_name_a_user_would_write() -> None:
    assert DriverResourcesRequest(ports=["dummy-port", "http", "metrics.v2"]).ports == ("dummy-port", "http", "metrics.v2")


@pytest.mark.parametrize("bad", ["", "   ", "line\nbreak", 8080])
def test_an_empty_or_unprintable_port_name_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(ParameterError, match="non-empty, printable port names") as info:
        DriverResourcesRequest(ports=[bad])  # type: ignore[list-item]
    assert info.value.field == "ports"


def test_a_port_name_may_appear_once_per_driver() -> None:
    with pytest.raises(ParameterError, match="names a port twice"):
        DriverResourcesRequest(ports=["dummy-port", "dummy-port"])

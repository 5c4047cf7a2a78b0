"""Pieces of the HTTP driver that need no server: parameters, type names, the missing extra."""

from __future__ import annotations

import subprocess
import sys
from typing import Optional

import pytest

from rvai_sdk.exc import DriverError, ParameterError, RvaiError
from rvai_sdk.extensions.drivers.fast_api_driver import (
    FastAPIClient,
    FastAPIClientError,
    FastAPIDriver,
    FastAPIDriverParameters,
    _resolve_type,
)
from rvai_sdk.resources import DriverResources
from rvai_sdk.types import Dict, Enum, Float, Image, Integer, List, String, type_name


def test_driver_parameters_have_safe_defaults_and_reject_bad_values() -> None:
    parameters = FastAPIDriver().get_parameters()
    assert isinstance(parameters, FastAPIDriverParameters)
    assert parameters.host == "127.0.0.1" and parameters.api_key is None and not parameters.include_traceback
    with pytest.raises(ParameterError, match="max_pending_tasks"):
        FastAPIDriver({"max_pending_tasks": -1})
    with pytest.raises(ParameterError, match="callback_backoff"):
        FastAPIDriver({"callback_backoff": float("nan")})
    with pytest.raises(ParameterError, match="no parameter 'port'"):
        FastAPIDriver({"port": 80})


def test_driver_asks_for_one_http_port_and_publishes_where_it_listens() -> None:
    driver = FastAPIDriver()
    assert driver.resources_request().ports == ("http",)
    resources = DriverResources(ports={"http": 8123}, host="10.1.2.3", node="box")
    assert driver.services(resources)[0]["taggedAddresses"]["lan"] == {"address": "127.0.0.1", "port": 8123}
    everywhere = FastAPIDriver({"host": "0.0.0.0"})
    assert everywhere.services(resources)[0]["taggedAddresses"]["lan"] == {"address": "10.1.2.3", "port": 8123}
    assert driver.stats() == {}


@pytest.mark.parametrize(
    "tp",
    [Integer, Float, String, Image, List[Integer], Dict[String, List[Float]], Enum[String], Optional[List[Integer]]],
)
def test_the_client_reads_back_every_type_name_the_server_sends(tp: object) -> None:
    assert _resolve_type(type_name(tp)) == tp


def test_the_client_leaves_unknown_type_names_alone() -> None:
    assert _resolve_type("MyOwnType") is None and _resolve_type("List[MyOwnType]") is None


def test_client_errors_join_the_sdk_hierarchy_and_say_what_is_missing() -> None:
    assert issubclass(FastAPIClientError, DriverError) and issubclass(FastAPIClientError, RvaiError)
    with pytest.raises(FastAPIClientError, match="host= and port="):
        FastAPIClient(port=80)


def test_importing_the_driver_without_the_extra_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None\n"
        "try:\n"
        "    import rvai_sdk.extensions.drivers.fast_api_driver\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "MissingExtraError" in result.stdout and "rvai_sdk[fastapi]" in result.stdout, result.stdout + result.stderr

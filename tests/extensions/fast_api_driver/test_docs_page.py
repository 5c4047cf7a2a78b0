"""A headless Chromium (Debian's ``chromium`` package) loads the driver's interactive docs page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver
from rvai_sdk.runtime import Inference, init
from tests.conftest import IN_CI
from tests.extensions.fast_api_driver._pipelines import http_pipeline

pytestmark = pytest.mark.timeout(120)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if IN_CI:
        pytest.fail("chromium is not installed; CI installs Debian's chromium package (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def test_chromium_renders_the_docs_page_with_the_pipeline_inputs(tmp_path: Path) -> None:
    browser = chromium()
    with init("debug") as rt, rt.start_inference(Inference(pipeline=http_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=handle) as client:
            client.wait(timeout=30)
            url = f"{client.base_url}/"
        common = [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
        dom = subprocess.run(
            [*common, "--virtual-time-budget=10000", "--dump-dom", f"{url}?try"],
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        ).stdout
        screenshot = tmp_path / "docs.png"
        subprocess.run(
            [*common, "--window-size=1280,1600", f"--screenshot={screenshot}", url],
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        )
    assert 'id="pipeline-name">http-test<' in dom
    for name in ("x", "image"):
        assert f"<code>{name}</code>" in dom
    assert "a number" in dom and "any picture" in dom  # the inputs' descriptions
    # the page's form sent its example to POST /predict and shows the answer
    response = dom.split('id="response">', 1)[1].split("</pre>", 1)[0]
    assert response.startswith("200 OK") and '"outputs"' in response and '"width": 2' in response, response
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000

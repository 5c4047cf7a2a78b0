"""A headless Chromium (Debian's ``chromium`` package) loads the driver's interactive docs page."""

from __future__ import annotations

import re
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


# Every host but the server's own address resolves to nothing: a page that needs a CDN stays blank,
# as it would on a machine without internet (the test machine has none; this holds on one with internet too).
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=http://127.0.0.1:9"]


def test_swagger_ui_and_redoc_render_without_internet(tmp_path: Path) -> None:
    browser = chromium()
    with init("debug") as rt, rt.start_inference(Inference(pipeline=http_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=handle) as client:
            client.wait(timeout=30)
            url = client.base_url
        common = [browser, *FLAGS, *OFFLINE, "--proxy-bypass-list=127.0.0.1", f"--user-data-dir={tmp_path / 'profile'}"]

        def dump(path: str) -> str:
            return subprocess.run(
                [*common, "--virtual-time-budget=15000", "--dump-dom", f"{url}{path}"],
                capture_output=True, text=True, timeout=90, check=True,
            ).stdout

        swagger, redoc = dump("/docs"), dump("/redoc")
        screenshot = tmp_path / "swagger.png"
        subprocess.run(
            [*common, "--window-size=1280,1600", "--virtual-time-budget=15000", f"--screenshot={screenshot}", f"{url}/docs"],
            capture_output=True, text=True, timeout=90, check=True,
        )
    for page in (swagger, redoc):  # every script, style and image comes from this server
        links = re.findall(r'src="([^"]+)"', page) + re.findall(r'<link[^>]*href="([^"]+)"', page)
        assert links and not [link for link in links if link.startswith(("http:", "https:", "//")) and not link.startswith(url)]
    # Swagger UI ran: it read /openapi.json and drew an operation block per route
    assert 'class="swagger-ui' in swagger and "opblock-summary-path" in swagger, swagger[:2000]
    for path in ("/predict", "/predict/batch", "/tasks"):
        assert f'data-path="{path}"' in swagger
    assert "http-test (rvai_sdk)" in swagger  # the API title from the OpenAPI document
    # ReDoc ran: its rendered page holds the title and the operations
    assert "http-test (rvai_sdk)" in redoc and "/predict/batch" in redoc and "redoc-wrap" in redoc, redoc[:2000]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000

"""``GET /``: a self-contained interactive page (no CDN needed) describing the pipeline, with a form to try it."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from .codec import Codec

__all__ = ["home_page"]


def home_page(codec: Codec) -> str:
    """The page ``GET /`` answers: the pipeline's inputs and outputs, the routes, and a form to try ``/predict``."""
    e = html.escape

    def rows(ports: Mapping[str, Any]) -> str:
        return "".join(
            f"<tr><td><code>{e(ref)}</code></td><td>{e(p['type'])}</td><td>{e(str(p['title']))}</td>"
            f"<td>{e(str(p['description']))}</td><td><code>{e(json.dumps(p['schema']))}</code></td></tr>"
            for ref, p in ports.items()
        )

    described = codec.describe()
    example = json.dumps({"inputs": codec.example_inputs(), "sid": None}, indent=2)
    header = "<tr><th>ref</th><th>type</th><th>title</th><th>description</th><th>JSON schema</th></tr>"
    routes = [
        ("GET", "/health", "the server is up"),
        ("GET", "/ready", "the inference process is reachable and warmed up"),
        ("GET", "/pipeline", "the pipeline's description"),
        ("POST", "/predict", "one request: JSON, or multipart with image files"),
        ("POST", "/predict/batch", "many requests, results in order"),
        ("POST", "/tasks", "an asynchronous task (202), optional callback_url"),
        ("GET", "/tasks", "every task"),
        ("GET", "/tasks/{id}", "a task's status and result; ?wait=seconds"),
        ("DELETE", "/tasks/{id}", "forget a task"),
    ]
    route_rows = "".join(f"<tr><td>{m}</td><td><code>{e(p)}</code></td><td>{e(d)}</td></tr>" for m, p, d in routes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(codec.pipeline.name)} - rvai_sdk</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}}
table{{border-collapse:collapse;margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}
th{{background:#eef}}textarea{{width:100%;height:12em;font-family:monospace}}pre{{background:#f6f6f6;padding:1em;white-space:pre-wrap}}
code{{font-size:90%}}
</style></head><body>
<h1>Pipeline <code id="pipeline-name">{e(codec.pipeline.name)}</code></h1>
<p>Served by rvai_sdk's FastAPIDriver. Full API: <a href="/docs">Swagger UI</a> · <a href="/redoc">ReDoc</a> ·
<a href="/openapi.json">OpenAPI document</a> · <a href="/pipeline">/pipeline</a></p>
<h2>Inputs</h2><table id="inputs">{header}{rows(described["inputs"])}</table>
<h2>Outputs</h2><table id="outputs">{header}{rows(described["outputs"])}</table>
<h2>Try it: POST /predict</h2>
<p><label>API key (if the server has one): <input id="key" type="password"></label></p>
<textarea id="body">{e(example)}</textarea><p><button id="send" onclick="send()">Predict</button></p>
<pre id="response">(the response appears here)</pre>
<h2>Routes</h2><table>{route_rows}</table>
<script>
async function send() {{
  const out = document.getElementById("response");
  const headers = {{"Content-Type": "application/json"}};
  const key = document.getElementById("key").value;
  if (key) headers["Authorization"] = "Bearer " + key;
  try {{
    const r = await fetch("/predict", {{method: "POST", headers, body: document.getElementById("body").value}});
    out.textContent = r.status + " " + r.statusText + "\\n" + JSON.stringify(await r.json(), null, 2);
  }} catch (err) {{ out.textContent = String(err); }}
}}
if (new URLSearchParams(location.search).has("try")) send();  // /?try runs the example at once
</script></body></html>"""

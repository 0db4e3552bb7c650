"""The serving layout: the server never loads the bundle build side; the routes table is the app."""

from __future__ import annotations

import json
import subprocess
import sys

from fastapi.testclient import TestClient
from starlette.routing import Route as StarletteRoute

from mlcanary_serving.app import ROUTES
from mlcanary_serving.bundle import BuildResult

BUILD_SIDE = (
    "mlcanary_serving.bundle.build",
    "mlcanary_serving.bundle.card",
    "mlcanary_serving.bundle.onnx_export",
    "mlcanary_serving.testing",
    "skl2onnx",
    "onnx",
    "sklearn",
)

SERVE = """
import json, sys
from fastapi.testclient import TestClient
from mlcanary_serving.app import create_app
from mlcanary_serving.settings import Settings

app = create_app(Settings(bundle_uri=sys.argv[1]), load_in_background=False)
with TestClient(app) as c:
    status = c.post("/predict", json={"features": json.loads(sys.argv[2])}).status_code
    c.get("/openapi.json"), c.get("/v2/models/breast-cancer"), c.get("/model-card"), c.get("/metrics")
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def test_serving_an_onnx_bundle_imports_no_build_side(
    bundles: dict[str, BuildResult], row: list[float]
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SERVE, str(bundles["onnx"].path), json.dumps(row)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["status"] == 200  # the check below is about a server that really served
    loaded = set(result["modules"])
    assert "mlcanary_serving.bundle.read" in loaded and "onnxruntime" in loaded
    assert not [m for m in loaded if m in BUILD_SIDE or m.split(".")[0] in BUILD_SIDE]


def test_the_routes_table_is_what_the_app_serves(client: TestClient) -> None:
    served = {
        (r.path, m)
        for r in client.app.routes  # type: ignore[attr-defined]
        if isinstance(r, StarletteRoute)
        and r.path not in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
        for m in (r.methods or ()) - {"HEAD"}
    }
    assert served == {(r.path, r.method) for r in ROUTES}
    assert len({r.operation_id for r in ROUTES}) == len(ROUTES)
    documented = client.get("/openapi.json").json()["paths"]
    assert {(p, m.upper()) for p, ops in documented.items() for m in ops} == served


def test_build_names_stay_importable_from_the_bundle_package() -> None:
    from mlcanary_serving import bundle
    from mlcanary_serving.bundle import build

    assert bundle.build_bundle is build.build_bundle and bundle.BuildResult is build.BuildResult

"""Property-based tests of the whole HTTP API from its own OpenAPI document (schemathesis).

A real server (``python -m mlcanary_serving``: uvicorn on 127.0.0.1, a free port) serves a tiny
real bundle: three features (an integer, a float, an optional float with a default) and string
classes, so that generated rows are short enough for the generator to hit both valid and invalid
requests often. Schemathesis reads ``/openapi.json`` and runs its examples, coverage and fuzzing
phases with every check except ``positive_data_acceptance`` (a schema cannot say that a tensor's
``data`` must hold ``shape`` values, or that a feedback ``request_id`` must exist, so some
schema-valid requests are rightly refused): no 5xx, every status, content type, header and body
as documented, schema-violating requests refused, wrong methods 405 with ``Allow``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlcanary_serving import metric_names as mn
from mlcanary_serving.bundle import BuildResult, build_bundle

from .conftest import ServerProcess

Start = Callable[..., ServerProcess]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 40  # per operation and phase; the whole run stays well under a minute here


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 20, 300), rng.normal(1.0, 0.3, 300), rng.normal(0.0, 1.0, 300)])
    y = np.where(X[:, 0] * X[:, 1] > 10, "yes", "no")
    return build_bundle(
        LogisticRegression(max_iter=1000).fit(X, y),
        X,
        y,
        tmp_path_factory.mktemp("tiny") / "bundle",
        name="tiny",
        version="0.1.0",
        feature_names=["count", "ratio", "bonus"],
        optional_features={"bonus": 0.0},
        onnx=True,
    )


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed (the dev extra)")
@pytest.mark.timeout(240)
def test_schemathesis_finds_nothing(start_server: Start, tiny_bundle: BuildResult, tmp_path: Path) -> None:
    srv = start_server(["--bundle", str(tiny_bundle.path)])
    srv.wait_state("ready")
    run = subprocess.run(
        [
            str(SCHEMATHESIS), "run", f"{srv.url}/openapi.json",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(MAX_EXAMPLES),
            "--workers", "1",
            "--request-timeout", "10",
            "--suppress-health-check", "all",
        ],
        capture_output=True, text=True, timeout=200, cwd=tmp_path,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    # it really tested every operation in every phase, with many requests
    operations = len(httpx.get(f"{srv.url}/openapi.json").json()["paths"])
    assert f"Tested: {operations}" in out, out[-3000:]
    assert re.search(rf"Coverage .*\n\s*\n\s*✅ {operations} passed", out), out[-3000:]
    assert re.search(rf"Fuzzing .*\n\s*\n\s*✅ {operations} passed", out), out[-3000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", out)
    assert generated and int(generated.group(1)) == int(generated.group(2)) >= 500, out[-3000:]
    text = httpx.get(f"{srv.url}/metrics").text
    server_errors = [
        ln for ln in text.splitlines() if ln.startswith(mn.REQUESTS_TOTAL) and "server_error" in ln
    ]
    assert server_errors and all(ln.endswith(" 0.0") for ln in server_errors), server_errors
    assert "Traceback" not in srv.log_text()

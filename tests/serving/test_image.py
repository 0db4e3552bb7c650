"""The serving image builds offline and answers a prediction (needs Docker; several minutes).

Runs scripts/build-serving-image.sh, which starts its own dockerd if none answers and stops it
again. Skipped unless MLCANARY_DOCKER_TESTS=1.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from .conftest import REPO


@pytest.mark.docker
@pytest.mark.xdist_group("docker")  # one engine, one base image: the image tests run in one worker
@pytest.mark.skipif(os.environ.get("MLCANARY_DOCKER_TESTS") != "1", reason="set MLCANARY_DOCKER_TESTS=1")
@pytest.mark.timeout(1800)
def test_image_builds_and_serves() -> None:
    p = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-serving-image.sh")],
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert '"prediction":0' in p.stdout
    assert "OK: image" in p.stdout


@pytest.mark.docker
@pytest.mark.xdist_group("docker")  # one engine, one base image: the image tests run in one worker
@pytest.mark.skipif(os.environ.get("MLCANARY_DOCKER_TESTS") != "1", reason="set MLCANARY_DOCKER_TESTS=1")
@pytest.mark.timeout(1800)
def test_onnx_only_image_serves_without_scikit_learn() -> None:
    """VARIANT=onnx: requirements-onnx.txt; the script fails when sklearn, scipy or joblib imports."""
    p = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-serving-image.sh")],
        capture_output=True,
        text=True,
        timeout=1700,
        env={**os.environ, "VARIANT": "onnx"},
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert '"prediction":0' in p.stdout
    assert "OK: image mlcanary/serving:dev-onnx (onnx)" in p.stdout


def _packages(requirements: str) -> set[str]:
    lines = (REPO / "serving-image" / requirements).read_text().splitlines()
    return {
        re.split(r"[=<>\[ ]", ln.strip())[0].lower() for ln in lines if ln.strip() and not ln.startswith("#")
    }


def test_onnx_requirements_are_the_full_ones_without_the_joblib_runtime() -> None:
    assert _packages("requirements.txt") - _packages("requirements-onnx.txt") == {"scikit-learn", "joblib"}
    assert _packages("requirements-onnx.txt") <= _packages("requirements.txt")
    assert "ARG REQUIREMENTS=requirements.txt" in (REPO / "serving-image" / "Dockerfile").read_text()


def test_dockerfile_contract() -> None:
    text = (REPO / "serving-image" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE" in text and "FROM ${BASE_IMAGE}" in text
    assert "USER 10001:10001" in text
    assert 'VOLUME ["/tmp"]' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["python", "-m", "mlcanary_serving"]' in text
    lines = (REPO / "serving-image" / "requirements.txt").read_text().splitlines()
    pkgs = {
        re.split(r"[=<>\[ ]", ln.strip())[0].lower() for ln in lines if ln.strip() and not ln.startswith("#")
    }
    assert {"fastapi", "uvicorn", "onnxruntime", "orjson", "numpy", "prometheus_client"} <= pkgs
    assert not pkgs & {"skl2onnx", "onnx", "pytest", "hypothesis", "kopf", "kubernetes"}

"""The operator image ships only the operator: its Dockerfile's install, reproduced in a temporary venv.

The test copies exactly what ``operator/Dockerfile``'s build stage COPYs, builds the wheel the image's
``pip install .`` would build, installs it into a fresh venv and checks that only ``mlcanary`` came from
the project, that every operator module imports there, and that ``mlcanary --help`` works. The third-party
runtime dependencies come from the dev venv (a ``.pth`` to its site-packages, which activates none of its
editable project packages) instead of PyPI, to keep the test to seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "operator" / "Dockerfile"
PROJECT_PACKAGES = ("mlcanary", "mlcanary_serving", "kube_emulator", "mlcanary_local")
# The image sets no PYTHONPATH: neither may the reproduction (it would show the repository's packages).
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _build_stage_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY in the build stage (before the second FROM)."""
    stage = DOCKERFILE.read_text().split("\nFROM ")[1]
    copies = []
    for line in stage.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, dest = line.split()[1:]
            copies.append((sources, dest))
    return copies


def _reproduce_context(target: Path) -> Path:
    """The build stage's /src: the files the Dockerfile copies, at the places it copies them to."""
    src = target / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for sources, dest in _build_stage_copies():
        for source in sources:
            origin = REPO / source
            where = src / dest / origin.name if dest.endswith("/") and len(sources) > 1 else src / dest
            if dest in ("./", "."):
                where = src / origin.name
            if origin.is_dir():
                shutil.copytree(origin, where, ignore=ignore)
            else:
                where.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, where)
    return src


def test_the_dockerfile_copies_only_the_operator() -> None:
    copied = [source for sources, _ in _build_stage_copies() for source in sources]
    # operator/ holds the package and, for offline builds only, operator/wheels (never in the repository)
    assert "operator" in copied or "operator/mlcanary" in copied, copied
    assert not [c for c in copied if re.search(r"serving-image|emulator|local", c)], copied


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(venv, wheel): the wheel the image builds, installed with --no-deps into a fresh venv."""
    work = tmp_path_factory.mktemp("operator-image")
    src = _reproduce_context(work)
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dist), str(src)], check=True, timeout=180)
    wheel = next(dist.glob("mlcanary-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=120,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "zz_runtime_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv, wheel


def test_the_wheel_holds_only_the_operator_package(image_venv: tuple[Path, Path]) -> None:
    _, wheel = image_venv
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mlcanary"}


def test_only_mlcanary_is_installed_and_every_module_imports(image_venv: tuple[Path, Path]) -> None:
    venv, _ = image_venv
    script = (
        "import importlib, importlib.util, pkgutil, mlcanary\n"
        f"for name in {PROJECT_PACKAGES!r}:\n"
        "    print(name, importlib.util.find_spec(name) is not None)\n"
        "for module in pkgutil.walk_packages(mlcanary.__path__, 'mlcanary.'):\n"
        "    importlib.import_module(module.name)\n"
        "print('imported', mlcanary.__file__)\n"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=venv,
        env=CLEAN_ENV,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "mlcanary True",
        "mlcanary_serving False",
        "kube_emulator False",
        "mlcanary_local False",
    ]
    assert str(venv) in lines[-1]  # the image's copy, not the repository's


def test_mlcanary_help_works_and_extra_commands_name_their_extra(image_venv: tuple[Path, Path]) -> None:
    venv, _ = image_venv
    mlcanary = str(venv / "bin" / "mlcanary")
    shown = subprocess.run(
        [mlcanary, "--help"], capture_output=True, text=True, timeout=60, cwd=venv, env=CLEAN_ENV
    )
    assert shown.returncode == 0, shown.stderr
    assert "{run,crd,render,report,analyze,bundle,local,demo}" in shown.stdout
    for command, hint in (
        ("local", "pip install 'mlcanary[local]'"),
        ("demo", "pip install 'mlcanary[local]'"),
        ("bundle", "pip install 'mlcanary[serving,bundle]'"),
    ):
        result = subprocess.run(
            [mlcanary, command, "status"], capture_output=True, text=True, timeout=60, cwd=venv, env=CLEAN_ENV
        )
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert hint in result.stderr, result.stderr


@pytest.mark.docker
@pytest.mark.xdist_group("docker")  # one engine, one base image: the image tests run in one worker
@pytest.mark.skipif(os.environ.get("MLCANARY_DOCKER_TESTS") != "1", reason="set MLCANARY_DOCKER_TESTS=1")
@pytest.mark.timeout(1200)
def test_operator_image_builds_and_answers_its_health_endpoint() -> None:
    """scripts/build-operator-image.sh: operator/Dockerfile built offline, run --read-only --user 10001
    against the API emulator; it answers /healthz and /metrics (the script starts dockerd if needed)."""
    p = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-operator-image.sh")],
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "OK: image" in p.stdout
    assert re.search(r"cold start: [0-9.]+s", p.stdout), p.stdout

"""Every `mlcanary` subcommand answers --help through the one console script."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", ["run", "crd", "render", "report", "analyze", "bundle", "local", "demo"])
def test_subcommand_help(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlcanary.cli", command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"mlcanary {command}" in result.stdout


def test_crd_check_through_the_cli() -> None:
    from mlcanary.cli import main

    assert main(["crd", "--check"]) == 0

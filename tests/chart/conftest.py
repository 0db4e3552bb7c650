"""Fixtures for the chart tests (helpers live in helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import CI_VALUES, HELM, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every CI values file rendered once (CRDs included), by file stem."""
    if HELM is None:
        pytest.skip("helm binary not installed (make setup installs it)")
    return {path.stem: render(path, include_crds=True) for path in CI_VALUES}

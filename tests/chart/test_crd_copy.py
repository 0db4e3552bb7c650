"""The chart ships the generated CRD unchanged.

`python -m mlcanary.crd --check` keeps crds/ in line with the models; this keeps the chart's copy in
line with crds/. After changing the models: python -m mlcanary.crd --write && cp crds/*.yaml
charts/mlcanary/crds/
"""

from __future__ import annotations

from pathlib import Path

from mlcanary import crd

REPO = Path(__file__).resolve().parents[2]
CHART_CRDS = REPO / "charts" / "mlcanary" / "crds"


def test_chart_crd_is_a_byte_identical_copy_of_the_generated_crd() -> None:
    chart_copy = CHART_CRDS / crd.CRD_FILENAME
    assert chart_copy.read_bytes() == crd.DEFAULT_PATH.read_bytes(), (
        "charts/mlcanary/crds/ differs from crds/: run "
        "`python -m mlcanary.crd --write && cp crds/*.yaml charts/mlcanary/crds/`"
    )


def test_chart_ships_no_other_crd() -> None:
    assert sorted(p.name for p in CHART_CRDS.iterdir()) == [crd.CRD_FILENAME]

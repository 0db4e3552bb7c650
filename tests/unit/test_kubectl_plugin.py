"""The pure parts of ``kubectl mlcanary``: when ``status`` stops and with which exit code, and the
tree of ``get``. The commands themselves run through the real kubectl in
tests/integration/test_kubectl_plugin.py."""

from __future__ import annotations

from typing import Any

import pytest

from mlcanary.kubectl_plugin import PROMOTED, ROLLED_BACK, build_parser, outcome, tree


def mdep(version: str, generation: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "fraud", "namespace": "ml", "generation": generation},
        "spec": {"model": {"version": version}, "rollout": {"steps": [20, 50]}},
        "status": {"observedGeneration": 2, **status},
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (mdep("2.0.0", phase="Healthy", stableVersion="2.0.0"), PROMOTED),
        (mdep("2.0.0", phase="Healthy", stableVersion="1.0.0"), None),  # not started yet
        (mdep("2.0.0", generation=3, phase="Healthy", stableVersion="2.0.0"), None),  # spec not seen yet
        (mdep("2.0.0", phase="Progressing", stableVersion="1.0.0", canary={"revision": "r"}), None),
        (mdep("2.0.0", phase="RolledBack", stableVersion="1.0.0", rejectedVersions=["2.0.0"]), ROLLED_BACK),
        # a retry the operator has not acted on yet: the rollout is about to start again
        (
            {
                **mdep(
                    "2.0.0", phase="RolledBack", rejectedVersions=["2.0.0"], handledRequests={"retry": "1"}
                ),
                "metadata": {"name": "fraud", "generation": 2, "annotations": {"mlcanary.io/retry": "2"}},
            },
            None,
        ),
        # rolled back, then the spec moved to another version: that one's rollout is awaited
        (mdep("3.0.0", phase="RolledBack", stableVersion="1.0.0", rejectedVersions=["2.0.0"]), None),
    ],
)
def test_status_ends_only_on_the_specs_version(obj: dict[str, Any], expected: int | None) -> None:
    assert outcome(obj) == expected


def test_the_tree_shows_the_current_steps_round_not_the_previous_one() -> None:
    measurement = {"metric": "error-rate", "value": 0.5, "threshold": "<= 0.05", "sampleSize": 900}
    obj = mdep(
        "2.0.0",
        phase="Progressing",
        stable={"revision": "fraud-v1", "template": {"model": {"version": "1.0.0"}}},
        canary={"revision": "fraud-v2", "template": {"model": {"version": "2.0.0"}}},
        canaryVersion="2.0.0",
        canaryWeight=50,
        servedWeight=48.5,
        currentStep=2,
        steps=[
            {
                "step": 1,
                "weight": 20,
                "rounds": 3,
                "verdict": "Successful",
                "measurements": [{**measurement, "metric": "old-step-metric", "verdict": "Successful"}],
            },
            {
                "step": 2,
                "weight": 50,
                "rounds": 1,
                "verdict": "Failed",
                "measurements": [{**measurement, "verdict": "Failed"}],
            },
        ],
    )
    text = tree(obj)
    assert text.startswith("ModelDeployment ml/fraud  Progressing  step 2/3")
    assert "stable   fraud-v1  1.0.0  route weight 50%" in text
    assert "canary   fraud-v2  2.0.0  route weight 50% (serving 48.5%)" in text
    assert "step 2 (50%): 1 analysis round(s), last verdict Failed" in text
    assert "old-step-metric" not in text
    row = next(line for line in text.splitlines() if "error-rate" in line).split()
    assert row == ["error-rate", "0.5", "-", "<=", "0.05", "900", "Failed"]


def test_usage_errors_exit_3_not_2_which_means_timed_out() -> None:
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["status"])
    assert raised.value.code == 3

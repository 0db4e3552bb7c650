"""The Argo CD health check (examples/argocd-health.lua) run by a Lua 5.1 interpreter (lupa), the Lua
version of gopher-lua that Argo CD embeds, against ModelDeployments recorded from the rollout engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from .rollout_recorder import RECORDED_DIR, RECORDINGS, lifecycle, recordings

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "examples" / "argocd-health.lua"
ARGO_HEALTH = {"Healthy", "Progressing", "Suspended", "Degraded", "Missing", "Unknown"}

EXPECTED = {
    "new-no-status": "Progressing",
    "initializing": "Progressing",
    "healthy": "Healthy",
    "generation-not-observed": "Progressing",
    "preparing": "Progressing",
    "progressing": "Progressing",
    "paused": "Suspended",
    "promoting": "Progressing",
    "rolling-back": "Progressing",
    "rolled-back": "Degraded",
    "rolled-forward-not-observed": "Progressing",
    "invalid-spec": "Degraded",
}


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the script the way Argo CD does: a fresh state, the live object as the global ``obj``."""
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return {"status": result.status, "message": result.message}


def test_every_recording_has_an_expectation() -> None:
    assert set(EXPECTED) == set(RECORDINGS)
    assert sorted(p.stem for p in RECORDED_DIR.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_status(name: str) -> None:
    obj = yaml.safe_load((RECORDED_DIR / f"{name}.yaml").read_text())
    result = health(obj)
    assert result["status"] == EXPECTED[name], result
    assert result["message"], "Argo CD shows the message: never empty"


def test_recordings_still_match_the_engine() -> None:
    """Each recorded object is in the phase the engine still produces at that point (exact content may
    drift with new status fields; re-record with `python tests/chart/rollout_recorder.py --write`)."""
    for name, obj in recordings().items():
        recorded = yaml.safe_load((RECORDED_DIR / f"{name}.yaml").read_text())
        for key in ("phase", "observedGeneration", "stableVersion", "canaryVersion"):
            assert recorded["status"].get(key) == obj["status"].get(key), (name, key)


def test_rollback_message_tells_what_happened() -> None:
    obj = yaml.safe_load((RECORDED_DIR / "rolled-back.yaml").read_text())
    message = health(obj)["message"]
    assert "rolled back" in message and "3.0" in message


def test_invalid_spec_message_names_the_field() -> None:
    obj = yaml.safe_load((RECORDED_DIR / "invalid-spec.yaml").read_text())
    assert "spec.rollout.steps" in health(obj)["message"]


def _expected_live(label: str, obj: dict[str, Any]) -> str:
    phase = obj["status"].get("phase")
    observed = obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    if label == "invalid-spec":
        return "Degraded"
    if obj["spec"]["rollout"].get("paused"):
        return "Suspended"
    if not observed:
        return "Progressing"
    return {"Healthy": "Healthy", "RolledBack": "Degraded", "Paused": "Suspended"}.get(phase, "Progressing")


def test_health_along_a_live_lifecycle() -> None:
    """Every tick of deploy -> rollout -> pause -> promote -> failed rollout -> roll forward -> retry."""
    seen: dict[str, set[str]] = {}
    for label, obj in lifecycle():
        result = health(obj)
        assert result["status"] in ARGO_HEALTH
        assert result["status"] == _expected_live(label, obj), (label, obj["status"].get("phase"), result)
        seen.setdefault(label, set()).add(result["status"])
    assert seen["rolled-back"] == {"Degraded"}
    assert seen["roll-forward"] == {"Progressing", "Healthy"}, "rolling forward clears Degraded"
    assert seen["retry"] == {"Progressing", "Healthy"}, "the retry annotation clears Degraded"
    assert seen["pause-requested"] == {"Suspended"}


def test_paused_flag_alone_is_suspended() -> None:
    obj = yaml.safe_load((RECORDED_DIR / "healthy.yaml").read_text())
    obj["spec"]["rollout"]["paused"] = True
    assert health(obj)["status"] == "Suspended"


def test_stale_invalid_spec_condition_is_not_degraded() -> None:
    """After the spec is fixed (new generation) and before the operator acts, the old SpecValid=False
    condition belongs to an older generation: Progressing, not Degraded."""
    obj = yaml.safe_load((RECORDED_DIR / "invalid-spec.yaml").read_text())
    obj["metadata"]["generation"] += 1
    assert health(obj)["status"] == "Progressing"

"""The shadow phase's mirroring: the Gateway API RequestMirror filter and Istio's mirror, matching the
prediction paths only (never /feedback), validated against the upstream CRDs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlcanary.engine import SetTraffic
from mlcanary.routers.gateway_api import GatewayAPIRouter
from mlcanary.routers.istio import IstioRouter
from mlcanary.routers.mesh import mirrored_paths

from .kit import (
    CANARY,
    GATEWAY,
    ISTIO,
    NAME,
    STABLE,
    MemoryKube,
    accept_route,
    context,
    needs_upstream,
    revisions,
    schema_errors,
)

PREDICTION_PATHS = ["/predict", "/v2/models/fraud/infer"]


def mirror(percent: int, weight: int = 0) -> SetTraffic:
    return SetTraffic(STABLE, CANARY, weight, percent)


def test_gateway_mirror_rule_sends_users_to_stable_and_a_copy_of_predictions_to_the_canary() -> None:
    (route,) = GatewayAPIRouter().desired_objects(context(GATEWAY), mirror(30))
    mirror_rule, weighted = route["spec"]["rules"]
    assert [(m["path"], m["method"]) for m in mirror_rule["matches"]] == [
        ({"type": "Exact", "value": p}, "POST") for p in PREDICTION_PATHS
    ]
    (flt,) = mirror_rule["filters"]
    assert flt["type"] == "RequestMirror"
    assert flt["requestMirror"]["backendRef"]["name"] == CANARY and flt["requestMirror"]["percent"] == 30
    assert [(r["name"], r["weight"]) for r in mirror_rule["backendRefs"]] == [(STABLE, 100)]
    assert [(r["name"], r["weight"]) for r in weighted["backendRefs"]] == [(STABLE, 100)]  # weight 0


def test_istio_mirror_route_comes_before_the_weighted_route() -> None:
    (vs,) = IstioRouter().desired_objects(context(ISTIO), mirror(50))
    mirror_route, weighted = vs["spec"]["http"]
    assert mirror_route["name"] == "shadow-mirror"
    assert [m["uri"] for m in mirror_route["match"]] == [{"exact": p} for p in PREDICTION_PATHS]
    assert all(m["method"] == {"exact": "POST"} for m in mirror_route["match"])
    assert mirror_route["mirror"]["host"] == CANARY
    assert mirror_route["mirrorPercentage"] == {"value": 50.0}
    assert [d["destination"]["host"] for d in mirror_route["route"]] == [STABLE]
    assert [d["destination"]["host"] for d in weighted["route"]] == [STABLE]


@pytest.mark.parametrize("traffic", [GATEWAY, ISTIO])
def test_feedback_and_other_paths_are_never_mirrored(traffic: dict[str, Any]) -> None:
    router = GatewayAPIRouter() if "gatewayAPI" in traffic else IstioRouter()
    (obj,) = router.desired_objects(context(traffic), mirror(100))
    text = repr(obj)
    assert "/feedback" not in text and "/v2/models/fraud/ready" not in text


@pytest.mark.parametrize("traffic", [GATEWAY, ISTIO])
def test_no_mirror_without_a_percent_or_to_an_unavailable_canary(traffic: dict[str, Any]) -> None:
    router = GatewayAPIRouter() if "gatewayAPI" in traffic else IstioRouter()
    for ctx, target in (
        (context(traffic), mirror(0)),
        (context(traffic, revisions(canary_ready=1)), mirror(100)),
        (context(traffic), SetTraffic(STABLE, None, 0, 100)),
    ):
        (obj,) = router.desired_objects(ctx, target)
        assert "RequestMirror" not in repr(obj) and "mirrorPercentage" not in repr(obj)


def test_only_prediction_paths_under_the_routers_path_are_mirrored() -> None:
    for path, expected in (
        ({"type": "PathPrefix", "value": "/"}, PREDICTION_PATHS),
        ({"type": "PathPrefix", "value": "/v2"}, ["/v2/models/fraud/infer"]),
        ({"type": "PathPrefix", "value": "/pred"}, []),  # a prefix matches whole segments only
        ({"type": "Exact", "value": "/predict"}, ["/predict"]),
    ):
        traffic = copy.deepcopy(GATEWAY)
        traffic["gatewayAPI"]["path"] = path
        ctx = context(traffic)
        assert mirrored_paths(ctx, ctx.spec.traffic.gateway_api.path) == expected  # type: ignore[union-attr]


@needs_upstream
@pytest.mark.parametrize("percent", [1, 37, 100])
def test_mirroring_objects_validate_against_the_upstream_crds(percent: int) -> None:
    gateway = copy.deepcopy(GATEWAY)
    gateway["gatewayAPI"]["timeouts"] = {"request": "30s"}
    gateway["gatewayAPI"]["extraRules"] = [
        {"name": "testers", "matches": [{"headers": [{"name": "X-Canary", "value": "1"}]}]}
    ]
    istio = copy.deepcopy(ISTIO)
    istio["istio"]["timeout"] = "30s"
    istio["istio"]["retries"] = {"attempts": 2}
    for router, traffic in ((GatewayAPIRouter(), gateway), (IstioRouter(), istio)):
        (obj,) = router.desired_objects(context(traffic), mirror(percent))
        assert schema_errors(obj) == [], obj
        # the HTTPRoute filter's CEL rules: percent and fraction are exclusive; mirror needs requestMirror
        for rule in obj["spec"].get("rules", []):
            for flt in rule.get("filters", []):
                assert not ("percent" in flt["requestMirror"] and "fraction" in flt["requestMirror"])
                assert flt["type"] == "RequestMirror" and "requestMirror" in flt


async def test_a_live_mirror_route_is_in_sync_and_confirmed_once_accepted() -> None:
    kube = MemoryKube()
    router = GatewayAPIRouter()
    ctx = context(GATEWAY)
    await router.apply(kube, ctx, mirror(40))
    accept_route(kube)
    observation = await router.observe(kube, ctx, mirror(40))
    assert observation.confirmed and observation.served_weight == 0
    # dropping the mirror (the shadow phase ended) is a change the router must write
    observation = await router.observe(kube, ctx, mirror(0))
    assert not observation.in_sync
    await router.apply(kube, ctx, mirror(0))
    assert "RequestMirror" not in repr(kube.obj("httproutes", NAME))

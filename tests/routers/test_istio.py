"""The Istio router: the VirtualService it builds and when its weights count as verified."""

from __future__ import annotations

import copy

import pytest

from mlcanary.engine import SetTraffic
from mlcanary.routers import get_router
from mlcanary.routers.istio import IstioRouter, istiod_verdict

from .kit import CANARY, ISTIO, NAME, STABLE, MemoryKube, context, revisions, target


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def weighted(vs: dict) -> list[tuple[str, int]]:
    route = vs["spec"]["http"][-1]
    assert route["name"] == "weighted"
    return [(d["destination"]["host"], d["weight"]) for d in route["route"]]


def test_registered_under_its_spec_key() -> None:
    assert isinstance(get_router("istio"), IstioRouter)


@pytest.mark.parametrize(
    ("weight", "expected"),
    [(0, [(STABLE, 100)]), (20, [(STABLE, 80), (CANARY, 20)]), (100, [(CANARY, 100)])],
)
def test_weights_sum_to_100_and_zero_weights_are_left_out(weight, expected) -> None:
    (vs,) = IstioRouter().desired_objects(context(ISTIO), target(weight))
    assert weighted(vs) == expected
    assert sum(w for _, w in weighted(vs)) == 100


def test_an_unready_canary_is_never_a_destination() -> None:
    (vs,) = IstioRouter().desired_objects(context(ISTIO, revisions(canary_ready=0)), target(50))
    assert weighted(vs) == [(STABLE, 100)]


def test_hosts_gateways_policies_and_extra_routes_first() -> None:
    traffic = {
        "istio": {
            "hosts": ["fraud.example.com", "fraud"],
            "gateways": ["istio-ingress/public", "mesh"],
            "path": {"type": "PathPrefix", "value": "/v1"},
            "timeout": "5s",
            "retries": {"attempts": 2, "perTryTimeout": "2s", "retryOn": "5xx,reset"},
            "extraRules": [
                {
                    "name": "testers",
                    "matches": [
                        {"headers": [{"name": "X-Canary", "value": "always"}], "method": "POST"},
                        {
                            "queryParams": [
                                {"name": "canary", "value": "^(1|yes)$", "type": "RegularExpression"}
                            ]
                        },
                    ],
                }
            ],
        }
    }
    (vs,) = IstioRouter().desired_objects(context(traffic), target(20))
    spec = vs["spec"]
    assert spec["hosts"] == ["fraud.example.com", "fraud"]
    assert spec["gateways"] == ["istio-ingress/public", "mesh"]
    testers, main = spec["http"]
    assert testers["name"] == "testers"
    assert testers["match"] == [
        {"uri": {"prefix": "/v1"}, "headers": {"x-canary": {"exact": "always"}}, "method": {"exact": "POST"}},
        {"uri": {"prefix": "/v1"}, "queryParams": {"canary": {"regex": "^(1|yes)$"}}},
    ]
    assert testers["route"] == [{"destination": {"host": CANARY, "port": {"number": 8080}}, "weight": 100}]
    assert main["match"] == [{"uri": {"prefix": "/v1"}}]
    for route in spec["http"]:
        assert route["timeout"] == "5s"
        assert route["retries"] == {"attempts": 2, "perTryTimeout": "2s", "retryOn": "5xx,reset"}


def test_without_a_path_the_weighted_route_catches_everything() -> None:
    (vs,) = IstioRouter().desired_objects(context(ISTIO), target(20))
    assert "match" not in vs["spec"]["http"][-1]
    assert "gateways" not in vs["spec"]


@pytest.mark.parametrize(
    "bad", [{"timeout": "0s"}, {"hosts": []}, {"retries": {"attempts": -1}}, {"port": 80}]
)
def test_spec_errors_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        context({"istio": {**ISTIO["istio"], **bad}})


# ---------------------------------------------------------------------------------- verification


def vs_with_status(generation: int, **status) -> dict:
    return {"metadata": {"generation": generation}, "status": status}


def test_istiod_status_when_present_decides() -> None:
    reconciled = {"type": "Reconciled", "status": "True"}
    pending = {
        "type": "Reconciled",
        "status": "False",
        "reason": "stillPropagating",
        "message": "61/122 complete",
    }
    assert istiod_verdict(vs_with_status(3), require_status=False)[0] is None
    assert istiod_verdict(vs_with_status(3), require_status=True)[0] is False
    assert istiod_verdict(vs_with_status(3, observedGeneration=2, conditions=[reconciled]), False)[0] is False
    ok, why = istiod_verdict(vs_with_status(3, observedGeneration="3", conditions=[pending]), False)
    assert not ok and "61/122" in why
    assert istiod_verdict(vs_with_status(3, observedGeneration=3, conditions=[reconciled]), True)[0] is True
    assert istiod_verdict(vs_with_status(3, observedGeneration=3), False)[0] is True
    assert istiod_verdict(vs_with_status(3, observedGeneration=3), True)[0] is False


async def test_without_istiod_status_a_generation_must_stay_put_for_settle_time() -> None:
    clock = Clock()
    router = IstioRouter(clock=clock)
    ctx = context({"istio": {"hosts": ["fraud"], "settleTime": "10s"}})
    kube = MemoryKube()
    await router.apply(kube, ctx, target(20))
    observation = await router.observe(kube, ctx, target(20))
    assert observation.in_sync and not observation.verified and "settleTime is 10s" in observation.message
    clock.now += 9
    assert not (await router.observe(kube, ctx, target(20))).verified
    clock.now += 1
    observation = await router.observe(kube, ctx, target(20))
    assert observation.confirmed and observation.served_weight == 20
    # A new weight is a new generation: the wait starts again.
    await router.apply(kube, ctx, target(50))
    assert not (await router.observe(kube, ctx, target(50))).verified
    clock.now += 10
    assert (await router.observe(kube, ctx, target(50))).confirmed


async def test_with_require_status_the_settle_fallback_is_refused() -> None:
    clock = Clock()
    router = IstioRouter(clock=clock)
    ctx = context({"istio": {"hosts": ["fraud"], "settleTime": "0s", "requireStatus": True}})
    kube = MemoryKube()
    await router.apply(kube, ctx, target(20))
    clock.now += 3600
    observation = await router.observe(kube, ctx, target(20))
    assert observation.in_sync and not observation.verified and "requireStatus" in observation.message
    vs = kube.objects[("virtualservices", "ml", NAME)]
    vs["status"] = {
        "observedGeneration": vs["metadata"]["generation"],
        "conditions": [{"type": "Reconciled", "status": "True"}],
    }
    assert (await router.observe(kube, ctx, target(20))).confirmed


async def test_a_hand_edit_is_reverted_and_restarts_the_settle_wait() -> None:
    clock = Clock()
    router = IstioRouter(clock=clock)
    ctx = context({"istio": {"hosts": ["fraud"], "settleTime": "5s"}})
    kube = MemoryKube()
    await router.apply(kube, ctx, target(20))
    await router.observe(kube, ctx, target(20))
    clock.now += 5
    assert (await router.observe(kube, ctx, target(20))).confirmed

    def all_to_canary(vs: dict) -> None:
        vs["spec"]["http"][-1]["route"] = [{"destination": {"host": CANARY, "port": {"number": 8080}}}]
        vs["spec"]["exportTo"] = ["."]

    kube.edit("virtualservices", NAME, all_to_canary)
    observation = await router.observe(kube, ctx, target(20))
    assert not observation.in_sync and observation.served_weight == 100
    await router.apply(kube, ctx, target(20))
    live = kube.obj("virtualservices", NAME)
    assert weighted(live) == [(STABLE, 80), (CANARY, 20)] and "exportTo" not in live["spec"]
    clock.now += 1
    assert not (await router.observe(kube, ctx, target(20))).verified
    clock.now += 5
    assert (await router.observe(kube, ctx, target(20))).confirmed


async def test_first_deploy_waits_for_an_available_revision_and_foreign_objects_are_left_alone() -> None:
    kube = MemoryKube()
    router = IstioRouter()
    await router.apply(
        kube, context(ISTIO, revisions(stable_ready=0, canary_ready=None)), SetTraffic(STABLE, None, 0)
    )
    assert kube.obj("virtualservices", NAME) is None
    (vs,) = router.desired_objects(context(ISTIO), target(0))
    foreign = copy.deepcopy(vs)
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    kube.put("virtualservices", foreign)
    before = kube.obj("virtualservices", NAME)
    await router.apply(kube, context(ISTIO), target(20))
    assert kube.obj("virtualservices", NAME) == before
    assert "not controlled" in (await router.observe(kube, context(ISTIO), target(20))).message

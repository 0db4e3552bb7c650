"""The Gateway API router: the HTTPRoute it builds, how it reads it back, and what it refuses to do."""

from __future__ import annotations

import copy

import pytest

from mlcanary.engine import SetTraffic
from mlcanary.kube import Outcome
from mlcanary.models import ModelDeploymentSpec
from mlcanary.routers import get_router
from mlcanary.routers.gateway_api import GatewayAPIRouter, httproute, parents_verdict

from .kit import (
    CANARY,
    GATEWAY,
    NAME,
    NAMESPACE,
    STABLE,
    UID,
    MemoryKube,
    accept_route,
    context,
    httproute_defaults,
    revisions,
    target,
)

ROUTER = GatewayAPIRouter()


def weighted(route: dict) -> list[tuple[str, int]]:
    return [(ref["name"], ref["weight"]) for ref in route["spec"]["rules"][-1]["backendRefs"]]


def test_registered_under_its_spec_key() -> None:
    assert isinstance(get_router("gatewayAPI"), GatewayAPIRouter)


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        (0, [(STABLE, 100)]),
        (5, [(STABLE, 95), (CANARY, 5)]),
        (50, [(STABLE, 50), (CANARY, 50)]),
        (100, [(CANARY, 100)]),
    ],
)
def test_weighted_rule_has_integer_weights_and_leaves_zero_weights_out(weight, expected) -> None:
    (route,) = ROUTER.desired_objects(context(GATEWAY), target(weight))
    assert weighted(route) == expected


def test_an_unready_canary_is_never_weighted_or_referenced() -> None:
    ctx = context(GATEWAY, revisions(canary_ready=1))  # 1 of 2 ready: not available
    (route,) = ROUTER.desired_objects(ctx, target(50))
    assert weighted(route) == [(STABLE, 100)]
    (route,) = ROUTER.desired_objects(ctx, target(100))
    assert weighted(route) == [(STABLE, 100)]


def test_route_is_owned_by_the_model_deployment_and_named_after_it() -> None:
    (route,) = ROUTER.desired_objects(context(GATEWAY), target(20))
    meta = route["metadata"]
    assert (meta["name"], meta["namespace"]) == (NAME, NAMESPACE)
    (ref,) = meta["ownerReferences"]
    assert ref["uid"] == UID and ref["controller"] is True and ref["kind"] == "ModelDeployment"


def test_parent_refs_spell_out_group_and_kind_and_a_service_parent_is_core_group() -> None:
    traffic = {
        "gatewayAPI": {
            "parentRefs": [
                {"name": "public", "namespace": "infra", "sectionName": "https"},
                {"name": "fraud", "kind": "Service", "port": 8080},
            ]
        }
    }
    (route,) = ROUTER.desired_objects(context(traffic), target(20))
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "infra",
            "sectionName": "https",
        },
        {"group": "", "kind": "Service", "name": "fraud", "port": 8080},
    ]


def test_path_hostnames_and_timeouts_apply_to_every_rule() -> None:
    traffic = {
        "gatewayAPI": {
            "parentRefs": [{"name": "public"}],
            "hostnames": ["fraud.example.com"],
            "path": {"type": "Exact", "value": "/v1/predict"},
            "timeouts": {"request": "10s", "backendRequest": "4s"},
            "extraRules": [
                {"name": "testers", "matches": [{"headers": [{"name": "X-Canary", "value": "1"}]}]}
            ],
        }
    }
    (route,) = ROUTER.desired_objects(context(traffic), target(20))
    assert route["spec"]["hostnames"] == ["fraud.example.com"]
    for rule in route["spec"]["rules"]:
        assert rule["timeouts"] == {"request": "10s", "backendRequest": "4s"}
        assert all(m["path"] == {"type": "Exact", "value": "/v1/predict"} for m in rule["matches"])


PINNED = {
    "gatewayAPI": {
        "parentRefs": [{"name": "public"}],
        "extraRules": [
            {"name": "testers", "matches": [{"headers": [{"name": "X-Canary", "value": "always"}]}]},
            {
                "name": "old-clients",
                "backend": "stable",
                "matches": [{"queryParams": [{"name": "v", "value": "1"}]}],
            },
        ],
    }
}


def pinned(route: dict) -> list[str]:
    return [rule["backendRefs"][0]["name"] for rule in route["spec"]["rules"][:-1]]


def test_extra_rules_pin_requests_and_weight_changes_never_touch_them() -> None:
    routes = [ROUTER.desired_objects(context(PINNED), target(w))[0] for w in (0, 5, 50, 100)]
    for route in routes:
        assert pinned(route) == [CANARY, STABLE]
        assert route["spec"]["rules"][:-1] == routes[0]["spec"]["rules"][:-1]
    first = routes[0]["spec"]["rules"][0]
    assert first["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"type": "Exact", "name": "X-Canary", "value": "always"}],
        }
    ]
    assert first["backendRefs"] == [
        {"group": "", "kind": "Service", "name": CANARY, "port": 8080, "weight": 100}
    ]


def test_a_rule_pinned_to_the_canary_goes_to_stable_while_the_canary_is_absent_or_unready() -> None:
    (route,) = ROUTER.desired_objects(
        context(PINNED, revisions(canary_ready=None)), SetTraffic(STABLE, None, 0)
    )
    assert pinned(route) == [STABLE, STABLE]
    (route,) = ROUTER.desired_objects(context(PINNED, revisions(canary_ready=0)), target(0))
    assert pinned(route) == [STABLE, STABLE]


def test_backend_ports_come_from_the_revision_services() -> None:
    route = httproute(context(GATEWAY), target(20), {STABLE: 8080, CANARY: 9090})
    assert [ref["port"] for ref in route["spec"]["rules"][-1]["backendRefs"]] == [8080, 9090]


@pytest.mark.parametrize(
    "bad",
    [
        {"extraRules": [{"name": "weighted", "matches": [{"method": "GET"}]}]},
        {
            "extraRules": [
                {"name": "a", "matches": [{"method": "GET"}]},
                {"name": "a", "matches": [{"method": "PUT"}]},
            ]
        },
        {"timeouts": {"request": "1s", "backendRequest": "2s"}},
        {"timeouts": {"request": "1.5s"}},
        {"path": {"type": "PathPrefix", "value": "/a//b"}},
        {"path": {"type": "Exact", "value": "predict"}},
        {"hostnames": ["Fraud.Example.com"]},
        {"parentRefs": []},
        {"port": 8080},
    ],
)
def test_spec_errors_are_refused_before_anything_is_written(bad) -> None:
    traffic = {"gatewayAPI": {"parentRefs": [{"name": "public"}], **bad}}
    with pytest.raises(ValueError):
        ModelDeploymentSpec.model_validate(
            {"model": {"name": "f", "version": "1", "uri": "s3://m/f/1/"}, "traffic": traffic}
        )


# ---------------------------------------------------------------------------------- verification


def live_route(weight: int = 20, generation: int = 3) -> dict:
    (route,) = ROUTER.desired_objects(context(GATEWAY), target(weight))
    route = copy.deepcopy(route)
    route["metadata"]["generation"] = generation
    return route


def status_entry(generation: int, accepted: str = "True", resolved: str = "True", **ref) -> dict:
    return {
        "parentRef": {"name": "public", "namespace": "infra", **ref},
        "controllerName": "example.com/gw",
        "conditions": [
            {
                "type": "Accepted",
                "status": accepted,
                "reason": "Accepted",
                "message": "",
                "observedGeneration": generation,
            },
            {
                "type": "ResolvedRefs",
                "status": resolved,
                "reason": "BackendNotFound",
                "message": "nope",
                "observedGeneration": generation,
            },
        ],
    }


def test_verified_only_when_every_parent_accepted_the_current_generation() -> None:
    route = live_route(generation=3)
    refs = route["spec"]["parentRefs"]
    assert parents_verdict(route, refs)[0] is False  # no status at all
    route["status"] = {"parents": [status_entry(2)]}
    ok, why = parents_verdict(route, refs)
    assert not ok and "generation 2" in why
    route["status"] = {"parents": [status_entry(3, accepted="False")]}
    assert parents_verdict(route, refs)[0] is False
    route["status"] = {"parents": [status_entry(3, resolved="False")]}
    ok, why = parents_verdict(route, refs)
    assert not ok and "not resolved" in why
    route["status"] = {"parents": [status_entry(3)]}
    assert parents_verdict(route, refs) == (True, "accepted by every parent at generation 3")


def test_status_parent_refs_match_with_defaults_filled_in() -> None:
    route = live_route(generation=1)
    entry = status_entry(1, group="gateway.networking.k8s.io", kind="Gateway")
    route["status"] = {"parents": [entry]}
    assert parents_verdict(route, route["spec"]["parentRefs"])[0]
    entry["parentRef"]["namespace"] = "elsewhere"
    assert not parents_verdict(route, route["spec"]["parentRefs"])[0]


def test_a_second_parent_without_status_keeps_the_route_unverified() -> None:
    traffic = {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "infra"}, {"name": "internal"}]}}
    (route,) = ROUTER.desired_objects(context(traffic), target(20))
    route["metadata"]["generation"] = 1
    route["status"] = {"parents": [status_entry(1)]}
    ok, why = parents_verdict(route, route["spec"]["parentRefs"])
    assert not ok and "Gateway internal" in why


def test_compare_reads_weights_back_and_tolerates_server_defaults() -> None:
    (desired,) = ROUTER.desired_objects(context(PINNED), target(20))
    live = copy.deepcopy(desired)
    live["metadata"]["generation"] = 1
    for rule in live["spec"]["rules"]:
        for match in rule["matches"]:
            match.setdefault("extraDefaultedField", "x")  # whatever a newer API server adds
    live["status"] = {"parents": [status_entry(1, name="public")]}
    live["status"]["parents"][0]["parentRef"].pop("namespace")
    observation = ROUTER.compare(context(PINNED), desired, live, target(20))
    assert observation.in_sync and observation.verified and observation.served_weight == 20


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda s: s["rules"][-1]["backendRefs"][1].update(weight=80), "weight"),
        (lambda s: s["rules"][-1]["backendRefs"].pop(), "1 items, want 2"),
        (lambda s: s["rules"].pop(0), "rules"),
        (lambda s: s.update(hostnames=["evil.example.com"]), "spec.hostnames"),
        (lambda s: s["parentRefs"][0].update(name="other"), "parentRefs"),
    ],
)
def test_any_hand_edit_of_the_owned_spec_is_out_of_sync(edit, why) -> None:
    (desired,) = ROUTER.desired_objects(context(PINNED), target(20))
    live = copy.deepcopy(desired)
    edit(live["spec"])
    observation = ROUTER.compare(context(PINNED), desired, live, target(20))
    assert not observation.in_sync and why in observation.message


# ------------------------------------------------------------------------------ apply and observe


async def test_apply_creates_reads_back_and_verifies_after_the_controller_accepts() -> None:
    kube = MemoryKube(defaults={"httproutes": httproute_defaults})
    ctx = context(GATEWAY)
    await ROUTER.apply(kube, ctx, target(20))
    observation = await ROUTER.observe(kube, ctx, target(20))
    assert observation.in_sync and not observation.verified and not observation.confirmed
    accept_route(kube)
    observation = await ROUTER.observe(kube, ctx, target(20))
    assert observation.confirmed and observation.served_weight == 20, observation.message


async def test_a_tick_that_changes_nothing_writes_nothing() -> None:
    kube = MemoryKube(defaults={"httproutes": httproute_defaults})
    ctx = context(GATEWAY)
    await ROUTER.apply(kube, ctx, target(20))
    writes = kube.writes
    for _ in range(3):
        await ROUTER.apply(kube, ctx, target(20))
    assert kube.writes == writes


async def test_a_hand_edit_of_the_weights_is_reverted_even_though_the_hash_matches() -> None:
    kube = MemoryKube(defaults={"httproutes": httproute_defaults})
    ctx = context(GATEWAY)
    await ROUTER.apply(kube, ctx, target(20))
    accept_route(kube)

    def to_canary(route: dict) -> None:
        refs = route["spec"]["rules"][-1]["backendRefs"]
        refs[0]["weight"], refs[1]["weight"] = 0, 100
        route["spec"]["hostnames"] = ["hijack.example.com"]

    kube.edit("httproutes", NAME, to_canary)
    accept_route(kube)  # the gateway happily accepts the edited route
    observation = await ROUTER.observe(kube, ctx, target(20))
    assert not observation.confirmed and observation.served_weight == 100
    await ROUTER.apply(kube, ctx, target(20))
    live = kube.obj("httproutes", NAME)
    assert weighted(live) == [(STABLE, 80), (CANARY, 20)]
    assert "hostnames" not in live["spec"]
    observation = await ROUTER.observe(kube, ctx, target(20))
    assert observation.in_sync and not observation.verified  # new generation, not accepted yet
    accept_route(kube)
    assert (await ROUTER.observe(kube, ctx, target(20))).confirmed


async def test_a_changed_parent_ref_is_applied_and_must_be_accepted_again() -> None:
    kube = MemoryKube(defaults={"httproutes": httproute_defaults})
    await ROUTER.apply(kube, context(GATEWAY), target(20))
    accept_route(kube)
    moved = {
        "gatewayAPI": {"parentRefs": [{"name": "internal", "namespace": "infra", "sectionName": "http"}]}
    }
    ctx = context(moved)
    observation = await ROUTER.observe(kube, ctx, target(20))
    assert not observation.confirmed and "parentRefs" in observation.message
    await ROUTER.apply(kube, ctx, target(20))
    assert kube.obj("httproutes", NAME)["spec"]["parentRefs"][0]["name"] == "internal"
    observation = await ROUTER.observe(kube, ctx, target(20))
    assert observation.in_sync and not observation.verified and "internal" in observation.message
    accept_route(kube)
    assert (await ROUTER.observe(kube, ctx, target(20))).confirmed


async def test_first_deploy_creates_no_route_until_a_revision_is_available() -> None:
    kube = MemoryKube()
    ctx = context(GATEWAY, revisions(stable_ready=0, canary_ready=None))
    await ROUTER.apply(kube, ctx, SetTraffic(STABLE, None, 0))
    assert kube.obj("httproutes", NAME) is None
    observation = await ROUTER.observe(kube, ctx, SetTraffic(STABLE, None, 0))
    assert not observation.confirmed and "does not exist" in observation.message
    ctx = context(GATEWAY, revisions(stable_ready=2, canary_ready=None))
    await ROUTER.apply(kube, ctx, SetTraffic(STABLE, None, 0))
    assert weighted(kube.obj("httproutes", NAME)) == [(STABLE, 100)]


@pytest.mark.parametrize(
    "owner_refs",
    [[], [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u", "controller": True}]],
)
async def test_a_route_the_model_deployment_does_not_control_is_left_alone(owner_refs: list) -> None:
    kube = MemoryKube()
    (route,) = ROUTER.desired_objects(context(GATEWAY), target(0))
    route["metadata"]["ownerReferences"] = owner_refs
    route["metadata"]["labels"] = {"team": "someone-else"}  # not labelled as ours either
    kube.put("httproutes", route)
    before = kube.obj("httproutes", NAME)
    await ROUTER.apply(kube, context(GATEWAY), target(20))
    assert kube.obj("httproutes", NAME) == before
    observation = await ROUTER.observe(kube, context(GATEWAY), target(20))
    assert not observation.confirmed and "not controlled" in observation.message


async def test_ports_are_read_from_the_revision_services() -> None:
    kube = MemoryKube()
    for name, port in ((STABLE, 8080), (CANARY, 9090)):
        kube.put(
            "services",
            {
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"ports": [{"name": "http", "port": port}]},
            },
        )
    await ROUTER.apply(kube, context(GATEWAY), target(20))
    refs = kube.obj("httproutes", NAME)["spec"]["rules"][-1]["backendRefs"]
    assert [(r["name"], r["port"]) for r in refs] == [(STABLE, 8080), (CANARY, 9090)]


async def test_a_route_whose_owner_reference_was_removed_by_hand_is_restored() -> None:
    kube = MemoryKube(defaults={"httproutes": httproute_defaults})
    ctx = context(GATEWAY)
    await ROUTER.apply(kube, ctx, target(20))
    kube.edit("httproutes", NAME, lambda r: r["metadata"].update(ownerReferences=[]))
    (result,) = await ROUTER.apply(kube, ctx, target(20))
    assert result.outcome == Outcome.REVERTED and "ownerReferences" in (result.drift or "")
    assert kube.obj("httproutes", NAME)["metadata"]["ownerReferences"][0]["uid"] == UID


async def test_only_an_outside_edit_is_reported_as_one() -> None:
    kube = MemoryKube(defaults={"httproutes": httproute_defaults})
    ctx = context(GATEWAY)
    (first,) = await ROUTER.apply(kube, ctx, target(20))
    assert first.outcome == Outcome.CREATED
    (moved,) = await ROUTER.apply(kube, ctx, target(50))  # our own target moved on: an update
    assert moved.outcome == Outcome.UPDATED
    kube.edit("httproutes", NAME, lambda r: r["spec"]["rules"][-1]["backendRefs"][1].update(weight=99))
    (reverted,) = await ROUTER.apply(kube, ctx, target(50))
    assert reverted.outcome == Outcome.REVERTED
    assert reverted.drift == "spec.rules[0].backendRefs[1].weight: 99, want 50"
    assert weighted(kube.obj("httproutes", NAME)) == [(STABLE, 50), (CANARY, 50)]
    (quiet,) = await ROUTER.apply(kube, ctx, target(50))
    assert quiet.outcome == Outcome.UNCHANGED


async def test_a_top_level_field_a_newer_crd_defaults_is_not_drift() -> None:
    def newer_api_server(route: dict) -> None:
        httproute_defaults(route)
        route["spec"].setdefault("useDefaultGateways", "None")  # say a future CRD defaults this

    kube = MemoryKube(defaults={"httproutes": newer_api_server})
    ctx = context(GATEWAY)
    await ROUTER.apply(kube, ctx, target(20))
    writes = kube.writes
    await ROUTER.apply(kube, ctx, target(20))
    assert kube.writes == writes
    accept_route(kube)
    assert (await ROUTER.observe(kube, ctx, target(20))).confirmed

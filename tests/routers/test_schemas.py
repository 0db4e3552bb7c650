"""Every object the operator produces, at every tick of a promotion, a rollback and a canary that never
becomes ready, with every router and a spread of router options, checked against the real schemas:

* HTTPRoute against the Gateway API v1.6.1 CRD, VirtualService against the Istio 1.29.6 CRD (from
  ``../shared/upstream-crds``), unknown fields being errors; plus the CEL rules (which nothing here
  evaluates) and istiod's admission rules that our output could plausibly break, written by hand;
* their ObjectMeta, and every Deployment and Service, with ``kubernetes-validate --strict`` for
  Kubernetes 1.29 and 1.37.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest

from .kit import dump_yaml, needs_upstream, schema_errors
from .world import ROUTERS, World, produced_objects

KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

VARIANTS: dict[str, dict[str, Any]] = {
    "replicas": ROUTERS["replicas"],
    "gatewayAPI": ROUTERS["gatewayAPI"],
    "gatewayAPI-gamma": {
        "gatewayAPI": {
            "parentRefs": [{"name": "fraud", "kind": "Service", "port": 8080}],
            "path": {"type": "Exact", "value": "/v1/models/fraud:predict"},
            "timeouts": {"request": "30s", "backendRequest": "10s"},
        }
    },
    "gatewayAPI-matches": {
        "gatewayAPI": {
            "parentRefs": [
                {"name": "public", "namespace": "infra", "sectionName": "https"},
                {"name": "public", "namespace": "infra", "sectionName": "http", "port": 80},
            ],
            "hostnames": ["fraud.example.com", "*.models.example.com"],
            "path": {"type": "PathPrefix", "value": "/fraud"},
            "extraRules": [
                {
                    "name": "testers",
                    "matches": [
                        {"headers": [{"name": "X-Canary", "value": "always"}]},
                        {
                            "queryParams": [
                                {"name": "canary", "value": "^(1|yes)$", "type": "RegularExpression"}
                            ]
                        },
                    ],
                },
                {
                    "name": "legacy",
                    "backend": "stable",
                    "matches": [{"path": {"type": "RegularExpression", "value": "/v0/.*"}, "method": "POST"}],
                },
            ],
        }
    },
    "istio": ROUTERS["istio"],
    "istio-gateway": {
        "istio": {
            "hosts": ["fraud.example.com"],
            "gateways": ["istio-ingress/public", "mesh"],
            "path": {"type": "PathPrefix", "value": "/fraud"},
            "timeout": "30s",
            "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure"},
            "settleTime": "0s",
            "extraRules": [
                {
                    "name": "testers",
                    "matches": [
                        {"headers": [{"name": "X-Canary", "value": "always"}], "method": "POST"},
                        {"queryParams": [{"name": "canary", "value": "1"}]},
                    ],
                },
                {
                    "name": "legacy",
                    "backend": "stable",
                    "matches": [{"path": {"type": "Exact", "value": "/v0"}}],
                },
            ],
        }
    },
}


async def _scenarios(name: str) -> list[dict[str, Any]]:
    traffic = VARIANTS[name]
    router = next(iter(traffic))
    objects: list[dict[str, Any]] = []
    for bad, broken in ((False, False), (True, False), (False, True)):
        world = World(router, traffic=copy.deepcopy(traffic))
        world.deploy("1.0.0")
        await world.run_until(lambda s: s.phase == "Healthy")
        if bad:
            world.provider.bad.add("2.0.0")
        if broken:
            world.broken.add("2.0.0")
        world.deploy("2.0.0")
        await world.run_until(
            lambda s: s.phase in ("Healthy", "RolledBack") and s.status.get("canary") is None
        )
        await world.run_until(lambda s: len(s.deployments()) == 1)
        objects += produced_objects(world)
    return objects


@functools.cache
def produced(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(asyncio.run(_scenarios(name)))


def of_kind(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, obj) for name in VARIANTS for obj in produced(name) if obj["kind"] == kind]


# ---------------------------------------------------------------------------- the schema translation


@needs_upstream
def test_translated_schemas_refuse_unknown_fields_and_bad_values() -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": "svc", "port": 80, "weight": 1}]}],
        },
    }
    assert schema_errors(route) == []
    for path, bad in [
        (("spec",), {"weights": 1}),
        (("spec", "rules", 0), {"backend": "x"}),
        (("spec", "rules", 0, "backendRefs", 0), {"weight": -1}),
        (("spec", "parentRefs", 0), {"sectionName": "Not_A_Name"}),
        ((), {"extra": True}),
    ]:
        broken = copy.deepcopy(route)
        node = broken
        for key in path:
            node = node[key]
        node.update(bad)
        assert schema_errors(broken), f"{bad} at {path} should be refused"
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "v"},
        "spec": {
            "hosts": ["a"],
            "http": [{"route": [{"destination": {"host": "a", "port": {"number": 80}}}]}],
        },
        "status": {"observedGeneration": "3", "somethingNew": {}},  # status keeps unknown fields
    }
    assert schema_errors(vs) == []
    vs["spec"]["http"][0]["route"][0]["destination"]["portNumber"] = 80
    assert schema_errors(vs)
    vs["spec"]["http"][0]["route"][0]["destination"].pop("portNumber")
    vs["spec"]["http"][0]["match"] = [{"uri": {"prefix": "/", "exact": "/"}}]  # oneOf
    assert schema_errors(vs)


# --------------------------------------------------------------------------- router objects: upstream


def test_every_router_variant_produced_its_objects() -> None:
    assert len(of_kind("HTTPRoute")) >= 10
    assert len(of_kind("VirtualService")) >= 6
    for name in VARIANTS:
        kinds = {obj["kind"] for obj in produced(name)}
        assert {"Deployment", "Service"} <= kinds, name


@needs_upstream
@pytest.mark.parametrize("kind", ["HTTPRoute", "VirtualService"])
def test_router_objects_validate_against_the_upstream_crds(kind: str) -> None:
    failures = [
        f"{name} {obj['metadata']['name']}: {error}"
        for name, obj in of_kind(kind)
        for error in schema_errors(obj)
    ]
    assert not failures, "\n".join(failures[:20])


DURATION = re.compile(r"^(\d+)(h|m|s|ms)")


def _seconds(text: str) -> float:
    total, rest = 0.0, text
    while rest:
        match = DURATION.match(rest)
        assert match, text
        total += int(match[1]) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[match[2]]
        rest = rest[match.end() :]
    return total


def test_httproutes_keep_the_cel_rules_nothing_here_evaluates() -> None:
    for name, route in of_kind("HTTPRoute"):
        spec = route["spec"]
        where = f"{name} {spec}"
        rules = spec["rules"]
        assert 1 <= len(rules) <= 16, where
        assert sum(len(rule.get("matches", [])) for rule in rules) <= 128, where
        names = [rule["name"] for rule in rules if "name" in rule]
        assert len(names) == len(set(names)), where
        for rule in rules:
            for ref in rule["backendRefs"]:
                # "Must have port for Service reference"
                assert ref["group"] != "" or ref["kind"] != "Service" or "port" in ref, where
            timeouts = rule.get("timeouts") or {}
            if "request" in timeouts and "backendRequest" in timeouts and _seconds(timeouts["request"]):
                assert _seconds(timeouts["backendRequest"]) <= _seconds(timeouts["request"]), where
            for match in rule["matches"]:
                path = match["path"]
                if path["type"] != "RegularExpression":
                    assert path["value"].startswith("/") and "//" not in path["value"], where
        # sectionName must be given (and unique) when one parent appears more than once
        parents: dict[tuple[Any, ...], list[Any]] = {}
        for ref in spec["parentRefs"]:
            key = (ref.get("group"), ref.get("kind"), ref.get("namespace"), ref["name"])
            parents.setdefault(key, []).append(ref.get("sectionName"))
        for sections in parents.values():
            if len(sections) > 1:
                assert None not in sections and len(set(sections)) == len(sections), where


def test_virtualservices_keep_istiods_admission_rules() -> None:
    for name, vs in of_kind("VirtualService"):
        spec = vs["spec"]
        where = f"{name} {spec}"
        assert spec["hosts"], where
        routes = spec["http"]
        for index, route in enumerate(routes):
            destinations = route["route"]
            assert destinations, where
            if len(destinations) > 1:
                assert sum(d["weight"] for d in destinations) == 100, where
            assert all(0 <= d.get("weight", 100) <= 100 for d in destinations), where
            for match in route.get("match", []):
                assert all(h == h.lower() for h in match.get("headers", {})), where
            if "match" not in route:
                assert index == len(routes) - 1, f"{where}: a catch-all route before others hides them"


# ------------------------------------------------------------------- built-in objects: kubernetes-validate


def _kubernetes_validate(objects: list[dict[str, Any]], version: str, tmp_path: Path) -> None:
    assert version in kubernetes_validate.utils.all_versions(), (
        f"kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''} "
        f"does not ship Kubernetes {version}: it would 'pass' without checking anything"
    )
    path = tmp_path / f"objects-{version}.yaml"
    path.write_text(dump_yaml(objects))
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    passed = [line for line in output.splitlines() if line.startswith("INFO") and " passed " in line]
    assert len(passed) == len(objects), output[-3000:]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_deployments_and_services_validate_strictly(version: str, tmp_path: Path) -> None:
    objects = [obj for name in VARIANTS for obj in produced(name) if obj["kind"] in ("Deployment", "Service")]
    kinds = {obj["kind"] for obj in objects}
    assert kinds == {"Deployment", "Service"}
    _kubernetes_validate(objects, version, tmp_path)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_router_object_metadata_validates_strictly(version: str, tmp_path: Path) -> None:
    """ObjectMeta of custom resources, checked as a ConfigMap's (kubernetes-validate skips CRs)."""
    objects = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        for kind in ("HTTPRoute", "VirtualService")
        for _, obj in of_kind(kind)
    ]
    _kubernetes_validate(objects, version, tmp_path)


def test_label_values_are_valid() -> None:
    value = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    for name in VARIANTS:
        for obj in produced(name):
            for key, text in (obj["metadata"].get("labels") or {}).items():
                assert len(text) <= 63 and value.match(text), f"{obj['kind']} {key}={text!r}"

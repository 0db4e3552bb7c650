"""Test kit for the routers: upstream CRD schemas as strict JSON Schema, an in-memory API, builders.

* :func:`upstream_validator` reads the Gateway API / Istio CRDs from ``../shared/upstream-crds``
  (never copied into the repo; tests skip when it is absent) and turns the ``openAPIV3Schema`` into a
  JSON Schema that refuses unknown fields the way the API server prunes/refuses them.
* :class:`MemoryKube` is :class:`mlcanary.kube.Kube` over :class:`MemoryApi`, an in-memory store
  behind the client layer's verbs that keeps the API server semantics the routers depend on:
  ``generation`` bumps on spec changes only, ``resourceVersion`` preconditions (409), merge patches,
  a ``/status`` subresource, and optional server-side defaulting.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mlcanary.engine import RevisionObservation, SetTraffic
from mlcanary.kube import Kube
from mlcanary.kubeapi import ApiError, Transport
from mlcanary.models import ModelDeploymentSpec
from mlcanary.resources import Owner
from mlcanary.routers.base import RouteContext

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO.parent / "shared" / "upstream-crds"
GATEWAY_CRDS = UPSTREAM / "gateway-api-v1.6.1-httproutes.yaml"
GATEWAY_GATEWAY_CRDS = UPSTREAM / "gateway-api-v1.6.1-gateways.yaml"
ISTIO_CRDS = UPSTREAM / "istio-1.29.6-virtualservices-destinationrules.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"
UID = "6f1c2b1e-0000-4000-8000-000000000001"
NAMESPACE = "ml"
NAME = "fraud"

needs_upstream = pytest.mark.skipif(
    not UPSTREAM.is_dir(), reason=f"upstream CRDs not available at {UPSTREAM} (../shared is absent)"
)

# ------------------------------------------------------------------------------- upstream schemas


def translate(node: Any) -> Any:
    """One OpenAPI v3 (Kubernetes structural) schema node as strict JSON Schema (draft 7).

    * ``properties`` without ``x-kubernetes-preserve-unknown-fields`` → ``additionalProperties: false``
      (the API server prunes unknown fields silently; here they are errors);
    * ``x-kubernetes-int-or-string`` → integer or string; ``nullable: true`` → the type or null;
    * ``x-kubernetes-*`` extensions, ``default`` and ``description`` are dropped (CEL rules in
      ``x-kubernetes-validations`` are not evaluated by anything here: see the hand-written checks).
    """
    if isinstance(node, list):
        return [translate(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: translate(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = translate(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [translate(sub) for sub in value]
        elif key.startswith("x-kubernetes-") or key in ("nullable", "default", "description", "example"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def crd_version_schema(crd: Mapping[str, Any], version: str) -> dict[str, Any]:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema = translate(entry["schema"]["openAPIV3Schema"])
            # Every object has these; ObjectMeta itself is checked separately (kubernetes-validate).
            schema.setdefault("properties", {}).update(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
            )
            schema["additionalProperties"] = False
            return schema
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


def load_crds(path: Path) -> dict[str, dict[str, Any]]:
    """CRDs in a file by kind."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return {d["spec"]["names"]["kind"]: d for d in docs if d.get("kind") == "CustomResourceDefinition"}


@functools.cache
def upstream_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    group, version = api_version.split("/")
    crds = {**load_crds(GATEWAY_CRDS), **load_crds(GATEWAY_GATEWAY_CRDS), **load_crds(ISTIO_CRDS)}
    crd = crds[kind]
    assert crd["spec"]["group"] == group
    schema = crd_version_schema(crd, version)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def schema_errors(obj: Mapping[str, Any]) -> list[str]:
    """Every violation of the upstream schema, as 'path: message'."""
    validator = upstream_validator(obj["apiVersion"], obj["kind"])
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '.'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


# ------------------------------------------------------------------------------------- builders


def owner() -> Owner:
    return Owner(name=NAME, namespace=NAMESPACE, uid=UID)


def spec(traffic: Mapping[str, Any], version: str = "2.0.0", **serving: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "fraud", "version": version, "uri": f"s3://models/fraud/{version}/"},
            "serving": {"replicas": 2, **serving},
            "traffic": dict(traffic),
        }
    )


GATEWAY = {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "infra"}]}}
ISTIO = {"istio": {"hosts": ["fraud"], "settleTime": "0s"}}
STABLE, CANARY = "fraud-v1-0-0-aaaaaaaa", "fraud-v2-0-0-bbbbbbbb"


def revisions(
    stable_ready: int = 2, canary_ready: int | None = 2, desired: int = 2
) -> dict[str, RevisionObservation]:
    found = {STABLE: RevisionObservation(STABLE, desired, stable_ready)}
    if canary_ready is not None:
        found[CANARY] = RevisionObservation(CANARY, desired, canary_ready)
    return found


def context(
    traffic: Mapping[str, Any], revs: Mapping[str, RevisionObservation] | None = None
) -> RouteContext:
    return RouteContext(
        owner=owner(), spec=spec(traffic), revisions=dict(revs if revs is not None else revisions())
    )


def target(weight: int, canary: str | None = CANARY) -> SetTraffic:
    return SetTraffic(STABLE, canary, weight)


# ------------------------------------------------------------------------------ in-memory API


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


Defaulter = Callable[[dict[str, Any]], None]


def httproute_defaults(route: dict[str, Any]) -> None:
    """What a real API server fills in on an HTTPRoute (the subset relevant to our objects)."""
    spec = route.setdefault("spec", {})
    for ref in spec.get("parentRefs") or []:
        ref.setdefault("group", "gateway.networking.k8s.io")
        ref.setdefault("kind", "Gateway")
    rules = spec.setdefault("rules", [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}])
    for rule in rules:
        rule.setdefault("matches", [{"path": {"type": "PathPrefix", "value": "/"}}])
        for ref in rule.get("backendRefs") or []:
            ref.setdefault("group", "")
            ref.setdefault("kind", "Service")
            ref.setdefault("weight", 1)


class MemoryApi(Transport):
    """An in-memory API server behind the client layer's verbs, with the semantics routers rely on."""

    def __init__(self, defaults: Mapping[str, Defaulter] | None = None) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.defaults = dict(defaults or {})
        self.calls: list[tuple[str, str]] = []
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        stored = copy.deepcopy(obj)
        stored["metadata"].setdefault("uid", f"uid-{next(self._uids)}")
        stored["metadata"].setdefault("generation", 1)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[(plural, meta["namespace"], meta["name"])] = stored
        return copy.deepcopy(stored)

    @staticmethod
    def _parse(path: str) -> tuple[str, str | None, str | None, str | None]:
        parts = path.strip("/").split("/")
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        namespace = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return plural, namespace, name, sub

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        seconds: float | None = None,
    ) -> Any:
        self.calls.append((method, path))
        plural, namespace, name, sub = self._parse(path)
        if method == "GET" and name is None:
            selector = (params or {}).get("labelSelector", "")
            wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
            items = [
                copy.deepcopy(o)
                for (p, ns, _), o in sorted(self.objects.items())
                if p == plural
                and (namespace is None or ns == namespace)
                and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
            ]
            return {"items": items, "metadata": {"resourceVersion": str(next(self._versions))}}
        key = (plural, namespace or "", name or "")
        if method == "GET":
            if key not in self.objects:
                raise ApiError(404, "NotFound", f"{plural} {name} not found")
            return copy.deepcopy(self.objects[key])
        if method == "POST":
            body = copy.deepcopy(body)
            if "name" not in body["metadata"]:
                body["metadata"]["name"] = f"{body['metadata']['generateName']}{next(self._uids)}"
            body["metadata"].setdefault("namespace", namespace)
            key = (plural, namespace or "", body["metadata"]["name"])
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f"{plural} {key[2]} already exists")
            obj = copy.deepcopy(body)
            obj.pop("status", None)
            if plural in self.defaults:
                self.defaults[plural](obj)
            return copy.deepcopy(self.put(plural, obj))
        if method == "DELETE":
            if self.objects.pop(key, None) is None:
                raise ApiError(404, "NotFound", f"{plural} {name} not found")
            return {}
        if method == "PATCH":
            assert content_type == "application/merge-patch+json", content_type
            if key not in self.objects:
                raise ApiError(404, "NotFound", f"{plural} {name} not found")
            stored = self.objects[key]
            wanted_rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and wanted_rv != stored["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f"{plural} {name}: resourceVersion {wanted_rv} is stale")
            if sub == "status":
                patched = copy.deepcopy(stored)
                patched["status"] = merge_patch(stored.get("status") or {}, body.get("status") or {})
            else:
                changes = {k: v for k, v in body.items() if k != "status"}
                patched = merge_patch(stored, changes)
                patched["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
                if plural in self.defaults:
                    self.defaults[plural](patched)
                if patched.get("spec") != stored.get("spec"):
                    patched["metadata"]["generation"] = stored["metadata"]["generation"] + 1
            if patched != stored:
                patched["metadata"]["resourceVersion"] = str(next(self._versions))
                self.objects[key] = patched
            return copy.deepcopy(self.objects[key])
        raise AssertionError(f"unexpected {method} {path}")


class MemoryKube(Kube):
    """:class:`mlcanary.kube.Kube` over :class:`MemoryApi` (no informer cache: every read is a call)."""

    api: MemoryApi

    def __init__(self, defaults: Mapping[str, Defaulter] | None = None) -> None:
        super().__init__(MemoryApi(defaults))

    # --- direct access for tests (no call recorded)

    @property
    def objects(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        return self.api.objects

    @property
    def calls(self) -> list[tuple[str, str]]:
        return self.api.calls

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.api.put(plural, obj)

    def obj(self, plural: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        found = self.api.objects.get((plural, namespace, name))
        return copy.deepcopy(found) if found else None

    def edit(
        self, plural: str, name: str, change: Callable[[dict[str, Any]], None], namespace: str = NAMESPACE
    ) -> None:
        """A user's hand edit: change the object, bump generation like the API server does."""
        stored = self.api.objects[(plural, namespace, name)]
        before = copy.deepcopy(stored.get("spec"))
        change(stored)
        if stored.get("spec") != before:
            stored["metadata"]["generation"] += 1
        stored["metadata"]["resourceVersion"] = str(next(self.api._versions))

    def writes_to(self, plural: str) -> int:
        return sum(1 for method, path in self.api.calls if method != "GET" and f"/{plural}" in path)


def accept_route(
    kube: MemoryKube, name: str = NAME, namespace: str = NAMESPACE, accepted: bool = True
) -> None:
    """What a gateway controller writes: every parent Accepted for the route's current generation."""
    route = kube.objects[("httproutes", namespace, name)]
    generation = route["metadata"]["generation"]
    route["status"] = {
        "parents": [
            {
                "parentRef": copy.deepcopy(ref),
                "controllerName": "example.com/gateway",
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "True" if accepted else "False",
                        "reason": "Accepted" if accepted else "NotAllowedByListeners",
                        "message": "",
                        "observedGeneration": generation,
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    },
                    {
                        "type": "ResolvedRefs",
                        "status": "True",
                        "reason": "ResolvedRefs",
                        "message": "",
                        "observedGeneration": generation,
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    },
                ],
            }
            for ref in route["spec"]["parentRefs"]
        ]
    }


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(json.loads(json.dumps(objects)), sort_keys=False, width=100)


def iter_yaml(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict):
            yield doc

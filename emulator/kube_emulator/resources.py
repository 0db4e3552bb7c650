"""The emulator's resource registry: built-in kinds, CRD-registered kinds, and API discovery."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kube_emulator.errors import Cause
from kube_emulator.schema import StructuralSchema

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
SUBRESOURCE_VERBS: tuple[str, ...] = ("get", "patch", "update")

RKey = tuple[str, str]  # (group, plural): the storage key, shared by all versions of a resource


@dataclass(slots=True)
class ResourceInfo:
    """One resource as served at one group/version."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status_subresource: bool = False
    scale_subresource: bool = False
    crd: str | None = None  # the name of the registering CRD, None for built-ins
    schema: StructuralSchema | None = None
    printer_columns: tuple[dict[str, Any], ...] = ()
    scale_paths: tuple[str, str, str | None] = (".spec.replicas", ".status.replicas", None)

    @property
    def key(self) -> RKey:
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def discovery(self) -> list[dict[str, Any]]:
        """The APIResource entries for this resource and its subresources."""
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
        if self.scale_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
        return entries


def _builtin(
    group_version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: Iterable[str] = (),
    categories: Iterable[str] = (),
    status: bool = False,
    scale: bool = False,
) -> ResourceInfo:
    group, _, version = group_version.rpartition("/")
    return ResourceInfo(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=tuple(short),
        categories=tuple(categories),
        status_subresource=status,
        scale_subresource=scale,
    )


def builtin_resources() -> list[ResourceInfo]:
    """The built-in kinds: stored and served generically (no controllers except Deployments)."""
    return [
        _builtin("v1", "namespaces", "Namespace", namespaced=False, short=["ns"], status=True),
        _builtin("v1", "pods", "Pod", short=["po"], categories=["all"], status=True),
        _builtin("v1", "services", "Service", short=["svc"], categories=["all"], status=True),
        _builtin("v1", "endpoints", "Endpoints", short=["ep"]),
        _builtin("v1", "secrets", "Secret"),
        _builtin("v1", "configmaps", "ConfigMap", short=["cm"]),
        _builtin("v1", "events", "Event", short=["ev"]),
        _builtin("v1", "serviceaccounts", "ServiceAccount", short=["sa"]),
        _builtin("v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=["pvc"], status=True),
        _builtin(
            "apps/v1",
            "deployments",
            "Deployment",
            short=["deploy"],
            categories=["all"],
            status=True,
            scale=True,
        ),
        _builtin(
            "apps/v1", "replicasets", "ReplicaSet", short=["rs"], categories=["all"], status=True, scale=True
        ),
        _builtin(
            "apps/v1",
            "statefulsets",
            "StatefulSet",
            short=["sts"],
            categories=["all"],
            status=True,
            scale=True,
        ),
        _builtin("apps/v1", "daemonsets", "DaemonSet", short=["ds"], categories=["all"], status=True),
        _builtin("batch/v1", "jobs", "Job", categories=["all"], status=True),
        _builtin("batch/v1", "cronjobs", "CronJob", short=["cj"], categories=["all"], status=True),
        _builtin("events.k8s.io/v1", "events", "Event", short=["ev"]),
        _builtin("coordination.k8s.io/v1", "leases", "Lease"),
        _builtin(
            "autoscaling/v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            short=["hpa"],
            status=True,
        ),
        _builtin("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", short=["pdb"], status=True),
        _builtin("networking.k8s.io/v1", "ingresses", "Ingress", short=["ing"], status=True),
        _builtin("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", short=["netpol"]),
        ResourceInfo(
            group="authorization.k8s.io",
            version="v1",
            plural="selfsubjectaccessreviews",
            kind="SelfSubjectAccessReview",
            namespaced=False,
            singular="selfsubjectaccessreview",
            verbs=("create",),
        ),
        _builtin("rbac.authorization.k8s.io/v1", "roles", "Role"),
        _builtin("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
        _builtin("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", namespaced=False),
        _builtin(
            "rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
        ),
        _builtin(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
            short=["crd", "crds"],
            status=True,
        ),
    ]


_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key per Kubernetes version priority: GA > beta > alpha, higher numbers first."""
    match = _VERSION.match(version)
    if match is None:
        return (3, 0, 0, version)
    major, stage, minor = int(match[1]), match[2], int(match[3] or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor, version)


def crd_resources(crd: Mapping[str, Any]) -> tuple[list[ResourceInfo], list[Cause]]:
    """The served versions a CRD registers, or the causes why the CRD is invalid."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = str(spec.get("group") or "")
    plural = str(names.get("plural") or "")
    kind = str(names.get("kind") or "")
    scope = spec.get("scope")
    causes: list[Cause] = []
    if not group:
        causes.append(Cause("spec.group", "FieldValueRequired", "Required value"))
    if not plural:
        causes.append(Cause("spec.names.plural", "FieldValueRequired", "Required value"))
    if not kind:
        causes.append(Cause("spec.names.kind", "FieldValueRequired", "Required value"))
    if scope not in ("Namespaced", "Cluster"):
        causes.append(
            Cause(
                "spec.scope",
                "FieldValueNotSupported",
                f'Unsupported value: "{scope}": supported values: "Cluster", "Namespaced"',
            )
        )
    name = (crd.get("metadata") or {}).get("name")
    if plural and group and name != f"{plural}.{group}":
        causes.append(
            Cause(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            )
        )
    versions = spec.get("versions") or []
    if not versions:
        causes.append(
            Cause(
                "spec.versions",
                "FieldValueRequired",
                "Required value: must have exactly one version marked as storage version",
            )
        )
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            Cause(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    infos: list[ResourceInfo] = []
    for index, version in enumerate(versions):
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        schema_dict = (version.get("schema") or {}).get("openAPIV3Schema")
        schema: StructuralSchema | None = None
        if isinstance(schema_dict, dict):
            try:
                schema = StructuralSchema(schema_dict)
            except Exception as exc:  # jsonschema.SchemaError and friends
                causes.append(
                    Cause(
                        f"spec.versions[{index}].schema.openAPIV3Schema",
                        "FieldValueInvalid",
                        f"Invalid value: {exc}",
                    )
                )
        scale = subresources.get("scale")
        infos.append(
            ResourceInfo(
                group=group,
                version=str(version.get("name") or ""),
                plural=plural,
                kind=kind,
                namespaced=scope != "Cluster",
                singular=str(names.get("singular") or kind.lower()),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in subresources,
                scale_subresource=isinstance(scale, dict),
                crd=str(name),
                schema=schema,
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                scale_paths=(
                    "." + str((scale or {}).get("specReplicasPath", ".spec.replicas")).lstrip("."),
                    "." + str((scale or {}).get("statusReplicasPath", ".status.replicas")).lstrip("."),
                    ("." + str(scale["labelSelectorPath"]).lstrip("."))
                    if scale and scale.get("labelSelectorPath")
                    else None,
                ),
            )
        )
    return infos, causes


@dataclass
class ResourceRegistry:
    """Every served (group, version, plural), plus discovery documents."""

    _by_gvr: dict[tuple[str, str, str], ResourceInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for info in builtin_resources():
            self.add(info)

    def add(self, info: ResourceInfo) -> None:
        self._by_gvr[(info.group, info.version, info.plural)] = info

    def remove_crd(self, crd_name: str) -> list[ResourceInfo]:
        gone = [info for info in self._by_gvr.values() if info.crd == crd_name]
        for info in gone:
            del self._by_gvr[(info.group, info.version, info.plural)]
        return gone

    def get(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_gvr.get((group, version, plural))

    def all(self) -> list[ResourceInfo]:
        return list(self._by_gvr.values())

    def for_key(self, key: RKey) -> list[ResourceInfo]:
        return sorted(
            (i for i in self._by_gvr.values() if i.key == key), key=lambda i: version_priority(i.version)
        )

    def preferred(self, key: RKey) -> ResourceInfo | None:
        infos = self.for_key(key)
        return infos[0] if infos else None

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        group, _, version = api_version.rpartition("/")
        for info in self._by_gvr.values():
            if info.group == group and info.version == version and info.kind == kind:
                return info
        return None

    def find(self, name: str) -> ResourceInfo | None:
        """By plural, singular, short name, kind, ``plural.group`` or ``group/version/plural``."""
        if name.count("/") == 2:
            group, version, plural = name.split("/")
            return self.get(group, version, plural)
        if name.count("/") == 1:
            version, plural = name.split("/")
            return self.get("", version, plural)
        lowered = name.lower()
        candidates = sorted(
            self._by_gvr.values(),
            key=lambda i: (i.group != "", i.group, version_priority(i.version)),
        )
        for info in candidates:
            qualified = f"{info.plural}.{info.group}" if info.group else info.plural
            if lowered in (info.plural, qualified, info.singular, info.kind.lower(), *info.short_names):
                return info
        return None

    def groups(self) -> dict[str, list[str]]:
        """Group name → served versions, preferred first (the core group is excluded)."""
        out: dict[str, set[str]] = {}
        for group, version, _ in self._by_gvr:
            if group:
                out.setdefault(group, set()).add(version)
        return {g: sorted(vs, key=version_priority) for g, vs in sorted(out.items())}

    # ------------------------------------------------------------------------------ discovery

    def api_versions(self, server_address: str) -> dict[str, Any]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        }

    @staticmethod
    def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def group_list(self) -> dict[str, Any]:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group_doc(g, vs) for g, vs in self.groups().items()],
        }

    def group(self, group: str) -> dict[str, Any] | None:
        versions = self.groups().get(group)
        if not versions:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, versions)}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        infos = [i for (g, v, _), i in sorted(self._by_gvr.items()) if g == group and v == version]
        if not infos:
            return None
        resources = [entry for info in infos for entry in info.discovery()]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

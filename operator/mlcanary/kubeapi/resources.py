"""The resource table: every kind the project reads or writes, with its REST path.

Pure: no I/O. One table for the operator and the local stack (the API emulator, a server, keeps its
own registry of what it serves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """One resource at one group/version, e.g. ``apps/v1`` ``deployments``."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path: the collection (in ``namespace``, or across all), an object, a subresource.

        >>> DEPLOYMENTS.path("ml", "fraud", "status")
        '/apis/apps/v1/namespaces/ml/deployments/fraud/status'
        >>> SERVICES.path()
        '/api/v1/services'
        """
        base = f"/apis/{self.api_version}" if "/" in self.api_version else f"/api/{self.api_version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if subresource is not None:
            base += f"/{subresource}"
        return base

    def key(self, obj: Obj) -> tuple[str, str]:
        """(namespace, name) of an object of this resource ("" namespace when cluster-scoped)."""
        meta = obj.get("metadata") or {}
        return (str(meta.get("namespace") or "") if self.namespaced else "", str(meta.get("name")))


DEPLOYMENTS = Resource("apps/v1", "Deployment", "deployments")
SERVICES = Resource("v1", "Service", "services")
PODS = Resource("v1", "Pod", "pods")
SECRETS = Resource("v1", "Secret", "secrets")
CONFIGMAPS = Resource("v1", "ConfigMap", "configmaps")
EVENTS = Resource("v1", "Event", "events")
NAMESPACES = Resource("v1", "Namespace", "namespaces", namespaced=False)
JOBS = Resource("batch/v1", "Job", "jobs")
CRONJOBS = Resource("batch/v1", "CronJob", "cronjobs")
HORIZONTAL_POD_AUTOSCALERS = Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
LEASES = Resource("coordination.k8s.io/v1", "Lease", "leases")
SERVICE_ACCOUNTS = Resource("v1", "ServiceAccount", "serviceaccounts")
ROLES = Resource("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False)
CLUSTER_ROLE_BINDINGS = Resource(
    "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False
)
CRDS = Resource(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False
)
MODEL_DEPLOYMENTS = Resource("mlcanary.io/v1alpha1", "ModelDeployment", "modeldeployments")
HTTPROUTES = Resource("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
VIRTUALSERVICES = Resource("networking.istio.io/v1", "VirtualService", "virtualservices")

ALL = (
    DEPLOYMENTS,
    SERVICES,
    PODS,
    SECRETS,
    CONFIGMAPS,
    EVENTS,
    NAMESPACES,
    JOBS,
    CRONJOBS,
    HORIZONTAL_POD_AUTOSCALERS,
    LEASES,
    SERVICE_ACCOUNTS,
    ROLES,
    ROLE_BINDINGS,
    CLUSTER_ROLES,
    CLUSTER_ROLE_BINDINGS,
    CRDS,
    MODEL_DEPLOYMENTS,
    HTTPROUTES,
    VIRTUALSERVICES,
)
_BY_KIND = {(r.api_version, r.kind): r for r in ALL}


def resource_for(obj: Obj) -> Resource:
    """The table entry for an object's apiVersion and kind; unknown kinds are an error, never a guess."""
    try:
        return _BY_KIND[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        raise ValueError(f"unknown kind {obj.get('apiVersion')}/{obj.get('kind')}") from None

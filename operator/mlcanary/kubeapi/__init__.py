"""The one Kubernetes client layer of the project: the resource table, the connection (kubeconfig or
in-cluster), an async REST client and informers (list + watch caches).

The operator (:mod:`mlcanary.kube` builds its owner-aware "ensure" logic on it) and the local stack's
components use it; nothing else in the project builds API paths or parses kubeconfigs.
"""

from mlcanary.kubeapi.client import ApiClient, Transport
from mlcanary.kubeapi.connection import Connection, load_connection
from mlcanary.kubeapi.errors import ApiError
from mlcanary.kubeapi.informer import Informer
from mlcanary.kubeapi.resources import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    CONFIGMAPS,
    CRDS,
    CRONJOBS,
    DEPLOYMENTS,
    EVENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    HTTPROUTES,
    JOBS,
    LEASES,
    MODEL_DEPLOYMENTS,
    NAMESPACES,
    PODS,
    ROLE_BINDINGS,
    ROLES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    VIRTUALSERVICES,
    Obj,
    Resource,
    resource_for,
)

__all__ = [
    "CLUSTER_ROLES",
    "CLUSTER_ROLE_BINDINGS",
    "CONFIGMAPS",
    "CRDS",
    "CRONJOBS",
    "DEPLOYMENTS",
    "EVENTS",
    "HORIZONTAL_POD_AUTOSCALERS",
    "HTTPROUTES",
    "JOBS",
    "LEASES",
    "MODEL_DEPLOYMENTS",
    "NAMESPACES",
    "PODS",
    "ROLES",
    "ROLE_BINDINGS",
    "SECRETS",
    "SERVICES",
    "SERVICE_ACCOUNTS",
    "VIRTUALSERVICES",
    "ApiClient",
    "ApiError",
    "Connection",
    "Informer",
    "Obj",
    "Resource",
    "Transport",
    "load_connection",
    "resource_for",
]

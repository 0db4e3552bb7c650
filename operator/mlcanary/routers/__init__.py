"""Routers by spec.traffic kind. An explicit registry: an unknown kind is an error, never a fallback."""

from __future__ import annotations

from mlcanary.models import RouterKind
from mlcanary.routers.base import Router
from mlcanary.routers.gateway_api import GatewayAPIRouter
from mlcanary.routers.istio import IstioRouter
from mlcanary.routers.replicas import ReplicaRouter

ROUTERS: dict[RouterKind, Router] = {
    RouterKind.GATEWAY_API: GatewayAPIRouter(),
    RouterKind.ISTIO: IstioRouter(),
    RouterKind.REPLICAS: ReplicaRouter(),
}


class UnknownRouterError(LookupError):
    pass


def get_router(kind: RouterKind | str) -> Router:
    try:
        return ROUTERS[RouterKind(kind)]
    except (KeyError, ValueError):
        raise UnknownRouterError(
            f"spec.traffic.{kind}: this operator has no {kind} router (available: {', '.join(sorted(ROUTERS))})"
        ) from None


def forget(namespace: str, name: str) -> None:
    """Drop what routers remember of a deleted ModelDeployment (settle timers)."""
    for router in ROUTERS.values():
        forget_object = getattr(router, "forget", None)
        if forget_object is not None:
            forget_object(namespace, name)

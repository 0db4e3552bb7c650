"""Routers by spec.traffic kind. An explicit registry: an unknown kind is an error, never a fallback."""

from __future__ import annotations

from mlcanary.routers.base import Router
from mlcanary.routers.gateway_api import GatewayAPIRouter
from mlcanary.routers.istio import IstioRouter
from mlcanary.routers.replicas import ReplicaRouter

ROUTERS: dict[str, Router] = {
    GatewayAPIRouter.kind: GatewayAPIRouter(),
    IstioRouter.kind: IstioRouter(),
    ReplicaRouter.kind: ReplicaRouter(),
}


class UnknownRouterError(LookupError):
    pass


def get_router(kind: str) -> Router:
    try:
        return ROUTERS[kind]
    except KeyError:
        raise UnknownRouterError(
            f"spec.traffic.{kind}: this operator has no {kind} router "
            f"(available: {', '.join(sorted(ROUTERS))})"
        ) from None

"""A stand-in for a gateway controller and for istiod's status reporting, for the local stack and tests.

The Kubernetes API emulator has no Gateway implementation and no istiod, so nothing would ever
report an HTTPRoute ``Accepted`` and the Gateway API router would (rightly) never verify a weight.
This loop plays that part, the way a real controller does:

* **HTTPRoutes**: for every ``spec.parentRefs`` entry accepted by ``accept`` (default: all), a
  ``status.parents`` entry with ``controllerName: mlcanary.io/local-gateway``, ``Accepted=True`` and
  ``ResolvedRefs`` (True when every backend Service exists and has the referenced port, else False
  with reason ``BackendNotFound``), both with ``observedGeneration`` = the route's generation.
  Entries of other controllers are left alone; entries of ours for parents no longer in the spec are
  removed. A parent refused by ``accept`` gets ``Accepted=False`` (reason ``NotAllowedByListeners``).
* **VirtualServices** (only with ``virtualservices=True``): ``status.observedGeneration`` and a
  ``Reconciled=True`` condition, as istiod does with ``PILOT_ENABLE_STATUS=true``.

It polls (every ``interval`` seconds) rather than watching: it is a test double, and a poll cannot
miss an event. Status is written through the ``/status`` subresource, conditional on the
resourceVersion read, so a concurrent spec change is picked up on the next round.

Run as ``python -m mlcanary_local.route_status --kubeconfig K [--istio]``, or use
:class:`RouteStatusController` (``async with RouteStatusController(kube): ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from mlcanary.kubeapi import (
    HTTPROUTES,
    SERVICES,
    VIRTUALSERVICES,
    ApiClient,
    ApiError,
    Resource,
    Transport,
    load_connection,
)

logger = logging.getLogger(__name__)

CONTROLLER_NAME = "mlcanary.io/local-gateway"
GATEWAY_GROUP = "gateway.networking.k8s.io"

Obj = dict[str, Any]
AcceptParent = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, status: bool, reason: str, message: str, generation: int) -> Obj:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": _now(),
    }


def _same_conditions(old: list[Obj], new: list[Obj]) -> bool:
    """Equal ignoring lastTransitionTime (so an unchanged verdict is not rewritten every round)."""

    def strip(conditions: list[Obj]) -> list[Obj]:
        return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]

    return strip(old) == strip(new)


def _accept_all(route: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
    return True


class RouteStatusController:
    """Writes HTTPRoute (and optionally VirtualService) status like a real controller would."""

    def __init__(
        self,
        api: Transport,
        *,
        namespace: str | None = None,
        interval: float = 0.2,
        accept: AcceptParent = _accept_all,
        virtualservices: bool = False,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.interval = interval
        self.accept = accept
        self.virtualservices = virtualservices
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="route-status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> RouteStatusController:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except (ApiError, OSError) as error:  # API briefly unavailable, CRD not installed yet ...
                logger.debug("route status round failed: %s", error)
            await asyncio.sleep(self.interval)

    # ---------------------------------------------------------------------------------- rounds

    async def sync_once(self) -> None:
        routes, _ = await self.api.list(HTTPROUTES, self.namespace)
        for route in routes:
            await self._write(HTTPROUTES, route, await self.httproute_status(route))
        if self.virtualservices:
            services, _ = await self.api.list(VIRTUALSERVICES, self.namespace)
            for vs in services:
                await self._write(VIRTUALSERVICES, vs, self.virtualservice_status(vs))
        self.rounds += 1

    async def httproute_status(self, route: Obj) -> Obj | None:
        """The status patch for one route, or None when its status is already right."""
        meta = route["metadata"]
        generation = int(meta.get("generation") or 1)
        resolved, why = await self._backends_resolved(route)
        ours: list[Obj] = []
        for parent in (route.get("spec") or {}).get("parentRefs") or []:
            if self.accept(route, parent):
                accepted = _condition(
                    "Accepted", True, "Accepted", "accepted by the local gateway", generation
                )
            else:
                accepted = _condition(
                    "Accepted",
                    False,
                    "NotAllowedByListeners",
                    "the local gateway refuses this parent",
                    generation,
                )
            refs = _condition(
                "ResolvedRefs", resolved, "ResolvedRefs" if resolved else "BackendNotFound", why, generation
            )
            ours.append(
                {"parentRef": dict(parent), "controllerName": CONTROLLER_NAME, "conditions": [accepted, refs]}
            )
        current = ((route.get("status") or {}).get("parents")) or []
        others = [p for p in current if p.get("controllerName") != CONTROLLER_NAME]
        mine = [p for p in current if p.get("controllerName") == CONTROLLER_NAME]
        unchanged = len(mine) == len(ours) and all(
            old.get("parentRef") == new["parentRef"]
            and _same_conditions(old.get("conditions") or [], new["conditions"])
            for old, new in zip(mine, ours, strict=True)
        )
        if unchanged:
            return None
        return {"parents": [*others, *ours]}

    async def _backends_resolved(self, route: Obj) -> tuple[bool, str]:
        namespace = route["metadata"]["namespace"]
        for rule in (route.get("spec") or {}).get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
                    return False, f"unsupported backend kind {ref.get('kind')}"
                service = await self.api.get(SERVICES, ref.get("namespace") or namespace, ref["name"])
                if service is None:
                    return False, f"Service {ref['name']} not found"
                ports = {p.get("port") for p in (service.get("spec") or {}).get("ports") or []}
                if ref.get("port") not in ports:
                    return False, f"Service {ref['name']} has no port {ref.get('port')}"
        return True, "every backend Service exists"

    @staticmethod
    def virtualservice_status(vs: Obj) -> Obj | None:
        generation = int(vs["metadata"].get("generation") or 1)
        status = vs.get("status") or {}
        reconciled = {
            "type": "Reconciled",
            "status": "True",
            "message": "1/1 proxies up to date",
            "lastTransitionTime": _now(),
        }
        if str(status.get("observedGeneration")) == str(generation) and any(
            c.get("type") == "Reconciled" and c.get("status") == "True"
            for c in status.get("conditions") or []
        ):
            return None
        return {"observedGeneration": generation, "conditions": [reconciled]}

    async def _write(self, resource: Resource, obj: Obj, status: Obj | None) -> None:
        if status is None:
            return
        meta = obj["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            await self.api.patch(resource, meta["namespace"], meta["name"], body, subresource="status")
        except ApiError as error:
            # 409: changed since we read it, the next round sees the new generation; 404: gone.
            if error.status not in (404, 409):
                raise


async def _main(args: argparse.Namespace) -> None:
    async with ApiClient(load_connection(args.kubeconfig)) as api:
        controller = RouteStatusController(
            api, namespace=args.namespace, interval=args.interval, virtualservices=args.istio
        )
        logger.info("marking HTTPRoutes Accepted%s", " and VirtualServices Reconciled" if args.istio else "")
        await controller.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlcanary_local.route_status", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", default=None, help="only this namespace (default: all)")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--istio", action="store_true", help="also mark VirtualServices Reconciled")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A fake Deployment controller for the emulator: writes ``status`` as if pods came up (or not).

No pods or ReplicaSets exist; the controller computes what the Deployment's status would be for a
*readiness mode* and writes it through the ``/status`` path of the store, asynchronously after each
change (so clients briefly see ``observedGeneration < generation``, like on a real cluster).

Modes (see :class:`ReadinessMode`):

* ``ready`` - every replica is ready at once (the default);
* ``slow:<seconds>`` - the replicas of a new rollout become ready after that many seconds;
* ``never`` - no replica of the new rollout ever becomes ready (``Progressing`` turns ``False`` with
  ``ProgressDeadlineExceeded`` after ``spec.progressDeadlineSeconds``);
* ``crash`` - like ``never``, plus a ``Warning``/``BackOff`` Event on the Deployment per generation;
* ``partial:<n>`` - at most ``n`` replicas of the new rollout become ready.

When a rollout changes the pod template, the previously available replicas keep serving (and are
counted in ``status.replicas``/``readyReplicas``) until the new ones are all ready, like a rolling
update. Zero counters are omitted from ``status``, as the real API does (``omitempty``).

The mode of a Deployment comes from, in order: the readiness rules set with
:meth:`DeploymentController.set_readiness` (latest first), the annotation
``emulator.mlcanary.io/readiness`` on the Deployment, the same annotation on its pod template, and
the controller's default mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kube_emulator.errors import ApiError
from kube_emulator.resources import ResourceInfo
from kube_emulator.selectors import LabelSelector
from kube_emulator.store import DEPLOYMENTS, Event, Obj, Store, now_rfc3339

READINESS_ANNOTATION = "emulator.mlcanary.io/readiness"
MODE_KINDS = ("ready", "slow", "never", "crash", "partial")


@dataclass(frozen=True, slots=True)
class ReadinessMode:
    """How the replicas of a Deployment behave: ``ready``, ``slow:<s>``, ``never``, ``crash``, ``partial:<n>``."""

    kind: str
    seconds: float = 0.0
    count: int = 0

    @classmethod
    def parse(cls, text: str | ReadinessMode) -> ReadinessMode:
        if isinstance(text, ReadinessMode):
            return text
        raw = str(text).strip().lower()
        kind, _, arg = raw.partition(":")
        if kind == "slow":
            try:
                seconds = float(arg)
            except ValueError:
                raise ValueError(
                    f"invalid readiness mode {text!r}: slow needs seconds, e.g. 'slow:2.5'"
                ) from None
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"invalid readiness mode {text!r}: seconds must be >= 0")
            return cls("slow", seconds=seconds)
        if kind == "partial":
            if not arg.isdigit():
                raise ValueError(f"invalid readiness mode {text!r}: partial needs a count, e.g. 'partial:1'")
            return cls("partial", count=int(arg))
        if kind in ("ready", "never", "crash") and not arg:
            return cls(kind)
        raise ValueError(
            f"invalid readiness mode {text!r}: expected one of ready, slow:<seconds>, never, crash, partial:<n>"
        )

    def __str__(self) -> str:
        if self.kind == "slow":
            return f"slow:{self.seconds:g}"
        if self.kind == "partial":
            return f"partial:{self.count}"
        return self.kind


def _is_selector(target: str) -> bool:
    return any(token in target for token in ("=", "!", " in ", " notin ", "(")) or (
        "," in target and not target.endswith("*")
    )


@dataclass(frozen=True, slots=True)
class ReadinessRule:
    """Deployments matched by ``target`` in ``namespace`` (None: any) get ``mode``.

    ``target`` is a name (``web``), a name prefix ending with ``*`` (``web-canary*``), a label selector
    (``app=web,track in (canary)``), or ``*``/empty for every Deployment.
    """

    id: int
    namespace: str | None
    target: str
    mode: ReadinessMode
    selector: LabelSelector | None = None

    @classmethod
    def build(
        cls, rule_id: int, namespace: str | None, target: str | None, mode: str | ReadinessMode
    ) -> ReadinessRule:
        target = (target or "").strip()
        selector = None
        if _is_selector(target):
            try:
                selector = LabelSelector.parse(target)
            except ApiError as exc:
                raise ValueError(f"invalid label selector {target!r}: {exc.message}") from None
        return cls(rule_id, namespace or None, target, ReadinessMode.parse(mode), selector)

    def matches(self, deployment: Mapping[str, Any]) -> bool:
        meta = deployment.get("metadata") or {}
        if self.namespace not in (None, "*") and meta.get("namespace") != self.namespace:
            return False
        target = self.target
        if target in ("", "*"):
            return True
        if self.selector is not None:
            template_labels = (
                ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
            ).get("labels")
            return self.selector.matches(meta.get("labels")) or self.selector.matches(template_labels)
        name = str(meta.get("name", ""))
        if target.endswith("*"):
            return name.startswith(target[:-1])
        return name == target

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "namespace": self.namespace, "target": self.target, "mode": str(self.mode)}


@dataclass(slots=True)
class _State:
    uid: str
    generation: int
    template_hash: str
    mode: ReadinessMode
    started: float
    carried: int = 0
    carried_old_rs: bool = False
    crash_reported: set[int] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


def _template_hash(obj: Obj) -> str:
    template = (obj.get("spec") or {}).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _max_unavailable(spec: Mapping[str, Any], replicas: int) -> int:
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or replicas == 0:
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        try:
            return math.floor(replicas * float(value[:-1]) / 100)
        except ValueError:
            return 0
    try:
        return min(int(value), replicas)
    except (TypeError, ValueError):
        return 0


class DeploymentController:
    """Computes and writes ``Deployment.status`` per readiness mode. See the module docstring."""

    def __init__(self, store: Store, *, default_mode: str | ReadinessMode = "ready") -> None:
        self.store = store
        self.default_mode = ReadinessMode.parse(default_mode)
        self._rules: list[ReadinessRule] = []
        self._ids = itertools.count(1)
        self._states: dict[tuple[str, str], _State] = {}
        self._pending: set[tuple[str, str]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Attach to the store; must be called from the event loop that serves the store."""
        self._loop = asyncio.get_running_loop()
        self.store.listeners.append(self._on_event)
        for obj in self.store.iter_objects(DEPLOYMENTS):
            self._schedule((str(obj["metadata"].get("namespace", "")), str(obj["metadata"]["name"])))

    def stop(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)
        for state in self._states.values():
            if state.timer is not None:
                state.timer.cancel()
        self._states.clear()
        self._loop = None

    # ------------------------------------------------------------------------------ readiness

    def set_readiness(
        self, namespace: str | None, target: str | None, mode: str | ReadinessMode
    ) -> ReadinessRule:
        """Add a rule (it wins over older rules and annotations) and re-evaluate all Deployments."""
        rule = ReadinessRule.build(next(self._ids), namespace, target, mode)
        self._rules.insert(0, rule)
        self._reschedule_all()
        return rule

    def clear_readiness(self, rule_id: int | None = None) -> int:
        """Remove one rule (by id) or all of them; returns how many were removed."""
        before = len(self._rules)
        self._rules = [r for r in self._rules if rule_id is not None and r.id != rule_id]
        self._reschedule_all()
        return before - len(self._rules)

    def rules(self) -> list[ReadinessRule]:
        return list(self._rules)

    def mode_for(self, deployment: Mapping[str, Any]) -> ReadinessMode:
        for rule in self._rules:
            if rule.matches(deployment):
                return rule.mode
        meta = deployment.get("metadata") or {}
        template_meta = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
        for notes in (meta.get("annotations"), template_meta.get("annotations")):
            if notes and READINESS_ANNOTATION in notes:
                try:
                    return ReadinessMode.parse(str(notes[READINESS_ANNOTATION]))
                except ValueError:
                    continue  # an invalid annotation is ignored, as a controller would
        return self.default_mode

    # ------------------------------------------------------------------------------ reconciling

    def _reschedule_all(self) -> None:
        for obj in self.store.iter_objects(DEPLOYMENTS):
            self._schedule((str(obj["metadata"].get("namespace", "")), str(obj["metadata"]["name"])))

    def _on_event(self, event: Event) -> None:
        if event.key == DEPLOYMENTS:
            self._schedule((event.namespace, str(event.obj["metadata"]["name"])))

    def _schedule(self, key: tuple[str, str]) -> None:
        if self._loop is None or key in self._pending:
            return
        self._pending.add(key)
        self._loop.call_soon(self._run, key)

    def _run(self, key: tuple[str, str]) -> None:
        self._pending.discard(key)
        if self._loop is None:
            return
        try:
            self.reconcile(key)
        except ApiError:
            self._schedule(key)  # e.g. a racing write: try again soon

    def reconcile(self, key: tuple[str, str]) -> None:
        assert self._loop is not None
        namespace, name = key
        obj = self.store.peek(DEPLOYMENTS, namespace, name)
        state = self._states.get(key)
        if obj is None:
            if state is not None and state.timer is not None:
                state.timer.cancel()
            self._states.pop(key, None)
            return
        now = self._loop.time()
        meta = obj["metadata"]
        uid, generation = str(meta["uid"]), int(meta.get("generation") or 1)
        template_hash = _template_hash(obj)
        mode = self.mode_for(obj)
        if state is None or state.uid != uid:
            state = _State(uid, generation, template_hash, mode, started=now)
            self._states[key] = state
        elif generation != state.generation:
            available = int((obj.get("status") or {}).get("availableReplicas") or 0)
            changed_template = template_hash != state.template_hash
            state.carried = available
            state.carried_old_rs = changed_template
            state.generation, state.template_hash, state.mode, state.started = (
                generation,
                template_hash,
                mode,
                now,
            )
        elif mode != state.mode:
            state.mode, state.started, state.carried, state.carried_old_rs = mode, now, 0, False
        status, wake_at = self._status(obj, state, now)
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if wake_at is not None:
            state.timer = self._loop.call_at(wake_at + 0.001, self._schedule, key)
        if mode.kind == "crash" and generation not in state.crash_reported:
            state.crash_reported.add(generation)
            self._post_crash_event(obj)
        current = obj.get("status") or {}
        if _comparable(current) != _comparable(status):
            status["conditions"] = _keep_transition_times(
                current.get("conditions") or [], status["conditions"]
            )
            info = self._info()
            self.store.update(info, namespace, name, {**obj, "status": status}, subresource="status")

    def _info(self) -> ResourceInfo:
        info = self.store.registry.get("apps", "v1", "deployments")
        assert info is not None
        return info

    def _status(self, obj: Obj, state: _State, now: float) -> tuple[dict[str, Any], float | None]:
        spec = obj.get("spec") or {}
        replicas = max(0, int(spec.get("replicas", 1) or 0))
        mode = state.mode
        elapsed = now - state.started
        wake_at: float | None = None
        if mode.kind == "ready":
            new_ready = replicas
        elif mode.kind == "slow":
            new_ready = replicas if elapsed >= mode.seconds else 0
            if new_ready < replicas:
                wake_at = state.started + mode.seconds
        elif mode.kind == "partial":
            new_ready = min(mode.count, replicas)
        else:
            new_ready = 0
        old = state.carried if state.carried_old_rs and new_ready < replicas else 0
        if state.carried_old_rs:
            total, ready = replicas + old, new_ready + old
        else:
            total, ready = replicas, max(new_ready, min(state.carried, replicas))
        complete = new_ready >= replicas
        deadline = float(spec.get("progressDeadlineSeconds", 600) or 600)
        rs_name = f"{obj['metadata']['name']}-{state.template_hash}"
        if complete:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif elapsed >= deadline:
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
            deadline_at = state.started + deadline
            wake_at = deadline_at if wake_at is None else min(wake_at, deadline_at)
        if ready >= replicas - _max_unavailable(spec, replicas):
            available_cond = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            available_cond = (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        stamp = now_rfc3339(self.store.clock)
        conditions = [
            {
                "type": t,
                "status": s,
                "reason": r,
                "message": m,
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
            }
            for t, (s, r, m) in (("Available", available_cond), ("Progressing", progressing))
        ]
        status: dict[str, Any] = {"observedGeneration": int(obj["metadata"].get("generation") or 1)}
        counters = {
            "replicas": total,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, replicas - ready),
        }
        status.update({k: v for k, v in counters.items() if v})
        status["conditions"] = conditions
        return status, wake_at

    def _post_crash_event(self, obj: Obj) -> None:
        info = self.store.registry.get("", "v1", "events")
        if info is None:
            return
        meta = obj["metadata"]
        stamp = now_rfc3339(self.store.clock)
        event = {
            # Named like client-go's event recorder does: "<object>.<hex>" (a generateName "x." is invalid).
            "metadata": {
                "name": f"{meta['name']}.{secrets.token_hex(8)}",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta["uid"],
            },
            "reason": "BackOff",
            "message": "Back-off restarting failed container (emulated readiness mode: crash)",
            "type": "Warning",
            "source": {"component": "mlcanary-emulator-deployment-controller"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self.store.create(info, str(meta.get("namespace", "")), event)


def _comparable(status: Mapping[str, Any]) -> Any:
    conditions = [
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
        for c in status.get("conditions") or []
    ]
    rest = {k: v for k, v in status.items() if k != "conditions"}
    return rest, sorted(conditions, key=lambda c: str(c[0]))


def _keep_transition_times(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    previous = {c.get("type"): c for c in old}
    out = []
    for condition in new:
        before = previous.get(condition["type"])
        if before is not None and before.get("status") == condition["status"]:
            condition = {
                **condition,
                "lastTransitionTime": before.get("lastTransitionTime", condition["lastTransitionTime"]),
            }
            if before.get("reason") == condition["reason"] and before.get("message") == condition["message"]:
                condition["lastUpdateTime"] = before.get("lastUpdateTime", condition["lastUpdateTime"])
        out.append(condition)
    return out

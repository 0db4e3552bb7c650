"""Request accounting: how many requests each user made, per verb and resource.

For benchmarks such as "the operator's API cost while idle": counters per (user, verb, group,
resource[/subresource]) for ordinary requests, watch streams opened counted apart (a watch is one
request that lasts), and refused requests apart. Read from Python (``KubernetesEmulator.requests()``)
or over HTTP (``GET /emulator/v1/requests``, admin only; ``DELETE`` resets).

Writes (create, update, patch, delete) are also counted per object and per User-Agent, so that a test
can tell which of several processes sharing one ServiceAccount wrote an object ("never two writers").
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kube_emulator.auth import Request

Key = tuple[str, str, str, str, str, str]  # (user, verb, group, resource, subresource, path)
# (user, user agent, verb, group, resource, subresource, namespace, name)
WriteKey = tuple[str, str, str, str, str, str, str, str]
WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})


def _what(key: Key) -> str:
    """resource, resource/subresource, or the path of a non-resource request."""
    _, _, _, resource, subresource, path = key
    if not resource:
        return path
    return f"{resource}/{subresource}" if subresource else resource


class RequestAccounting:
    def __init__(self) -> None:
        self.requests: Counter[Key] = Counter()
        self.watches: Counter[Key] = Counter()
        self.forbidden: Counter[Key] = Counter()
        self.writes: Counter[WriteKey] = Counter()

    def record(
        self, user: str, request: Request, *, allowed: bool, watch: bool = False, user_agent: str = ""
    ) -> None:
        # On every request: plain tuple keys and dict arithmetic, no string building.
        key = (user, request.verb, request.group, request.resource, request.subresource, request.path)
        counter = self.watches if watch and allowed else self.requests if allowed else self.forbidden
        counter[key] = counter.get(key, 0) + 1
        if allowed and request.verb in WRITE_VERBS:
            write = (user, user_agent, *key[1:5], request.namespace, request.name)
            self.writes[write] = self.writes.get(write, 0) + 1

    def reset(self) -> None:
        self.requests.clear()
        self.watches.clear()
        self.forbidden.clear()
        self.writes.clear()

    def total(self, user: str | None = None, *, resources_only: bool = True) -> int:
        """Ordinary requests (not watches, not refused) of ``user`` (None: everyone)."""
        return sum(
            count
            for key, count in self.requests.items()
            if (user is None or key[0] == user) and not (resources_only and not key[3])
        )

    def used(self, user: str) -> set[tuple[str, str, str]]:
        """(verb, group, resource) triples ``user`` was allowed and used (watches included)."""
        return {
            (key[1], key[2], _what(key))
            for counter in (self.requests, self.watches)
            for key in counter
            if key[0] == user and key[3]
        }

    def snapshot(self) -> dict[str, Any]:
        def rows(counter: Counter[Key]) -> list[dict[str, Any]]:
            return [
                {"user": key[0], "verb": key[1], "group": key[2], "resource": _what(key), "count": count}
                for key, count in sorted(counter.items())
            ]

        return {
            "requests": rows(self.requests),
            "watches": rows(self.watches),
            "forbidden": rows(self.forbidden),
            "writes": [
                {
                    "user": key[0],
                    "userAgent": key[1],
                    "verb": key[2],
                    "group": key[3],
                    "resource": f"{key[4]}/{key[5]}" if key[5] else key[4],
                    "namespace": key[6],
                    "name": key[7],
                    "count": count,
                }
                for key, count in sorted(self.writes.items())
            ],
        }

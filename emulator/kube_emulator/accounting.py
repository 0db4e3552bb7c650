"""Request accounting: how many requests each user made, per verb and resource.

For benchmarks such as "the operator's API cost while idle": counters per (user, verb, group,
resource[/subresource]) for ordinary requests, watch streams opened counted apart (a watch is one
request that lasts), and refused requests apart. Read from Python (``KubernetesEmulator.requests()``)
or over HTTP (``GET /emulator/v1/requests``, admin only; ``DELETE`` resets).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kube_emulator.auth import Request

Key = tuple[str, str, str, str]  # (user, verb, group, resource or resource/subresource or path)


class RequestAccounting:
    def __init__(self) -> None:
        self.requests: Counter[Key] = Counter()
        self.watches: Counter[Key] = Counter()
        self.forbidden: Counter[Key] = Counter()

    def record(self, user: str, request: Request, *, allowed: bool, watch: bool = False) -> None:
        if request.is_resource:
            what = request.resource + (f"/{request.subresource}" if request.subresource else "")
        else:
            what = request.path
        key = (user, request.verb, request.group, what)
        if not allowed:
            self.forbidden[key] += 1
        elif watch:
            self.watches[key] += 1
        else:
            self.requests[key] += 1

    def reset(self) -> None:
        self.requests.clear()
        self.watches.clear()
        self.forbidden.clear()

    def total(self, user: str | None = None, *, resources_only: bool = True) -> int:
        """Ordinary requests (not watches, not refused) of ``user`` (None: everyone)."""
        return sum(
            count
            for (who, _, _, what), count in self.requests.items()
            if (user is None or who == user) and not (resources_only and what.startswith("/"))
        )

    def used(self, user: str) -> set[tuple[str, str, str]]:
        """(verb, group, resource) triples ``user`` was allowed and used (watches included)."""
        return {
            (verb, group, what)
            for counter in (self.requests, self.watches)
            for (who, verb, group, what) in counter
            if who == user and not what.startswith("/")
        }

    def snapshot(self) -> dict[str, Any]:
        def rows(counter: Counter[Key]) -> list[dict[str, Any]]:
            return [
                {"user": user, "verb": verb, "group": group, "resource": what, "count": count}
                for (user, verb, group, what), count in sorted(counter.items())
            ]

        return {
            "requests": rows(self.requests),
            "watches": rows(self.watches),
            "forbidden": rows(self.forbidden),
        }

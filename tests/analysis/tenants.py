"""Two tenants in one Prometheus: the history the scoping tests read.

``team-a`` and ``team-b`` serve the same model name and versions (so only the namespace label tells
their series apart). team-a's canary is healthy; team-b's canary fails half its requests. team-b
also has a series no other namespace should see (``payments_total``). Every series carries the
``namespace`` label, as a PodMonitor's target labels would add it.
"""

from __future__ import annotations

from .promkit import History

T0 = 1_735_689_600
T_END = T0 + 3600
WINDOW = "5m"
MODEL = "fraud"
STABLE, CANARY = "1.0.0", "2.0.0"
TEAM_A, TEAM_B = "team-a", "team-b"

RPS = 10.0  # per revision and namespace
ERROR_SHARE = {TEAM_A: 0.005, TEAM_B: 0.5}  # of team-a's / team-b's canary requests
REQUESTS_IN_WINDOW = RPS * 300


def build_tenant_history() -> History:
    history = History(spans=[(T0, T_END)], step=15)
    for namespace in (TEAM_A, TEAM_B):
        for version in (STABLE, CANARY):
            errors = ERROR_SHARE[namespace] if version == CANARY else 0.005
            labels = {"namespace": namespace, "model_name": MODEL, "model_version": version}
            history.counter("mlcanary_requests_total", {**labels, "outcome": "success"}, RPS * (1 - errors))
            history.counter("mlcanary_requests_total", {**labels, "outcome": "server_error"}, RPS * errors)
            history.counter("mlcanary_requests_total", {**labels, "outcome": "client_error"}, 0.0)
    history.counter("payments_total", {"namespace": TEAM_B, "card": "4111-1111"}, 3.0)
    return history

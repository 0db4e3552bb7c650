"""The replicas router: the split read back from ready pods, and verified only once it has held."""

from __future__ import annotations

from mlcanary.engine import RevisionObservation
from mlcanary.routers.replicas import ReplicaRouter

from .kit import CANARY, STABLE, MemoryKube, context, revisions, target

REPLICAS = {"replicas": {"settleTime": "2s"}}


async def test_a_split_is_verified_once_it_has_held_for_the_settle_time() -> None:
    now = [100.0]
    router = ReplicaRouter(clock=lambda: now[0])
    kube = MemoryKube()
    ctx = context(
        REPLICAS, {STABLE: RevisionObservation(STABLE, 2, 2), CANARY: RevisionObservation(CANARY, 0, 0)}
    )
    observation = await router.observe(kube, ctx, target(0))
    assert observation.in_sync and not observation.verified and "settleTime" in observation.message
    now[0] += 1.9
    assert not (await router.observe(kube, ctx, target(0))).verified
    now[0] += 0.2
    assert (await router.observe(kube, ctx, target(0))).confirmed
    # Any change in what is read back starts the wait again.
    moved = context(
        REPLICAS, {STABLE: RevisionObservation(STABLE, 2, 1), CANARY: RevisionObservation(CANARY, 0, 0)}
    )
    assert not (await router.observe(kube, moved, target(0))).verified


def test_the_canary_serving_more_than_its_step_is_never_in_sync() -> None:
    ctx = context(REPLICAS, revisions(stable_ready=0, canary_ready=2, desired=2))
    observation = ReplicaRouter.observe_revisions(ctx, target(20))
    assert not observation.in_sync and observation.served_weight == 100.0
    assert "more than 20%" in observation.message

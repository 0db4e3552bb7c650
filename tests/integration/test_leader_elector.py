"""LeaderElector against the emulator over HTTP: races, expiry, renewal, 409 on a stale Lease, and the
bounds of the settings. A hand-driven clock stands in for waiting out lease durations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kube_emulator import EmulatorThread
from mlcanary.kubeapi import LEASES, ApiClient, ApiError, Connection, load_connection
from mlcanary.leader import LeaderElector
from mlcanary.settings import LeaderElection, Settings

NAMESPACE = "ops"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread(bookmark_interval=1.0, authorization="AlwaysAllow") as emu:
        emu.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        yield emu


@pytest.fixture
async def api(emulator: EmulatorThread, tmp_path: Path) -> AsyncIterator[ApiClient]:
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    async with ApiClient(load_connection(str(kubeconfig))) as client:
        yield client


def config(identity: str, **timings: float) -> LeaderElection:
    return LeaderElection(enabled=True, namespace=NAMESPACE, lease_name="op", identity=identity, **timings)  # type: ignore[arg-type]


async def test_of_two_racing_replicas_exactly_one_leads(api: ApiClient) -> None:
    a, b = LeaderElector(api, config("a")), LeaderElector(api, config("b"))
    results = await asyncio.gather(a._attempt(), b._attempt())
    assert sorted(results) == [False, True]
    lease = await api.get(LEASES, NAMESPACE, "op")
    assert lease is not None
    winner = "a" if results[0] else "b"
    assert lease["spec"]["holderIdentity"] == winner
    assert lease["spec"]["leaseDurationSeconds"] == 15
    assert lease["spec"]["renewTime"].endswith("Z") and "." in lease["spec"]["renewTime"]


async def test_a_follower_takes_over_only_after_the_lease_duration_without_renewal(api: ApiClient) -> None:
    clock = Clock()
    leader = LeaderElector(api, config("a"), clock)
    follower = LeaderElector(api, config("b"), clock)
    assert await leader._attempt()
    assert not await follower._attempt()
    clock.now += 10
    assert await leader._attempt(), "the leader renews"
    clock.now += 10
    assert not await follower._attempt(), "renewed 10 s ago (as the follower saw it): still held"
    clock.now += 14.9
    assert not await follower._attempt()
    clock.now += 0.2  # 15.1 s without a change the follower could see
    assert await follower._attempt()
    lease = await api.get(LEASES, NAMESPACE, "op")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert not await leader._attempt() and not leader.is_leader, "the old leader sees it lost"


async def test_the_emulator_refuses_a_lease_update_with_a_stale_resource_version(api: ApiClient) -> None:
    assert await LeaderElector(api, config("a"))._attempt()
    stale = await api.get(LEASES, NAMESPACE, "op")
    assert stale is not None
    assert await LeaderElector(api, config("a"))._attempt()  # renews: a new resourceVersion
    stale["spec"]["holderIdentity"] = "b"
    with pytest.raises(ApiError) as raised:
        await api.replace(stale)
    assert raised.value.conflict


async def test_hold_renews_and_returns_when_another_holder_appears(api: ApiClient) -> None:
    elector = LeaderElector(api, config("a", lease_duration=2, renew_deadline=0.6, retry_period=0.2))
    await elector.acquire()
    first = await api.get(LEASES, NAMESPACE, "op")
    assert first is not None
    lost = asyncio.create_task(elector.hold())
    await asyncio.sleep(0.5)
    assert not lost.done()
    current = await api.get(LEASES, NAMESPACE, "op")
    assert current is not None and current["spec"]["renewTime"] > first["spec"]["renewTime"], "renewed"
    current["spec"]["holderIdentity"] = "intruder"
    await api.replace(current)
    await asyncio.wait_for(lost, timeout=1.0)
    assert not elector.is_leader


async def test_hold_returns_within_the_renew_deadline_when_the_api_server_is_unreachable(
    api: ApiClient,
) -> None:
    elector = LeaderElector(api, config("a", lease_duration=2, renew_deadline=0.6, retry_period=0.2))
    await elector.acquire()
    async with ApiClient(Connection(server="http://127.0.0.1:9")) as dead:  # discard port: refused
        elector.api = dead
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(elector.hold(), timeout=2.0)
        assert asyncio.get_running_loop().time() - started <= 0.6 + 0.2 + 0.1


async def test_release_hands_the_lease_over_at_once(api: ApiClient) -> None:
    clock = Clock()
    leader, follower = LeaderElector(api, config("a"), clock), LeaderElector(api, config("b"), clock)
    await leader.acquire()
    assert not await follower._attempt()
    await leader.release()
    assert await follower._attempt(), "an empty holder is free to take without waiting"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MLCANARY_LEADER_ELECTION_LEASE_DURATION_SECONDS": "0"}, "LEASE_DURATION_SECONDS"),
        ({"MLCANARY_LEADER_ELECTION_LEASE_DURATION_SECONDS": "301"}, "LEASE_DURATION_SECONDS"),
        ({"MLCANARY_LEADER_ELECTION_LEASE_DURATION_SECONDS": "1.5"}, "SECONDS"),
        ({"MLCANARY_LEADER_ELECTION_RETRY_PERIOD_SECONDS": "0.01"}, "RETRY_PERIOD_SECONDS"),
        ({"MLCANARY_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "15"}, "RENEW_DEADLINE_SECONDS"),
        ({"MLCANARY_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "2.2"}, "RENEW_DEADLINE_SECONDS"),
    ],
)
def test_timings_are_bounded_and_nested(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env({"MLCANARY_LEADER_ELECTION": "true", "MLCANARY_POD_NAME": "p", **env})


def test_defaults_are_client_go_timings_and_off() -> None:
    election = Settings.from_env({}).leader_election
    assert (election.enabled, election.lease_duration, election.renew_deadline, election.retry_period) == (
        False,
        15,
        10.0,
        2.0,
    )

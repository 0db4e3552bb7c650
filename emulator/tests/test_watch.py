"""Watch streams: initial state, resumption, selectors, bookmarks, timeouts and 410 Gone."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from emulator_kit import CM, Http, admin_headers, configmap, meta_of

from kube_emulator import KubernetesEmulator


async def test_watch_without_resource_version_sends_current_state_then_changes(http: Http) -> None:
    await http.ok("POST", CM, configmap("a"))
    await http.ok("POST", CM, configmap("b"))

    async def change_later() -> None:
        await asyncio.sleep(0.2)
        await http.ok("PATCH", f"{CM}/a", {"data": {"x": "1"}})
        await http.ok("DELETE", f"{CM}/b")
        await http.ok("POST", CM, configmap("c"))

    task = asyncio.create_task(change_later())
    events = await http.watch(CM, max_events=5, timeoutSeconds="3")
    await task
    assert [(e["type"], meta_of(e)["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
        ("ADDED", "c"),
    ]
    assert events[2]["object"]["data"] == {"x": "1"}
    versions = [int(meta_of(e)["resourceVersion"]) for e in events[2:]]
    assert versions == sorted(versions)
    assert all(e["object"]["kind"] == "ConfigMap" for e in events)


async def test_watch_resumes_after_a_resource_version(http: Http) -> None:
    first = await http.ok("POST", CM, configmap("a"))
    await http.ok("PATCH", f"{CM}/a", {"data": {"step": "1"}})
    await http.ok("POST", CM, configmap("b"))
    await http.ok("DELETE", f"{CM}/a")
    events = await http.watch(CM, resourceVersion=first["metadata"]["resourceVersion"], timeoutSeconds="0.5")
    assert [(e["type"], meta_of(e)["name"]) for e in events] == [
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]

    listing = await http.ok("GET", CM)
    events = await http.watch(
        CM, resourceVersion=listing["metadata"]["resourceVersion"], timeoutSeconds="0.3"
    )
    assert events == [], "nothing happened after the list"


async def test_watch_times_out_and_ends_the_stream(http: Http) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await http.watch(CM, resourceVersion="1", timeoutSeconds="0.4", within=5)
    elapsed = loop.time() - started
    assert events == []
    assert 0.35 <= elapsed < 3, elapsed


async def test_watch_bookmarks_carry_the_latest_resource_version(http: Http) -> None:
    await http.ok("POST", "/api/v1/namespaces/other/configmaps", configmap("elsewhere"))
    latest = (await http.ok("GET", CM))["metadata"]["resourceVersion"]
    events = await http.watch(CM, resourceVersion=latest, allowWatchBookmarks="true", timeoutSeconds="0.7")
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, events
    assert all(meta_of(b)["resourceVersion"] == latest for b in bookmarks)
    assert bookmarks[0]["object"]["kind"] == "ConfigMap"
    no_bookmarks = await http.watch(CM, resourceVersion=latest, timeoutSeconds="0.5")
    assert no_bookmarks == []


async def test_send_initial_events_ends_with_an_annotated_bookmark(http: Http) -> None:
    await http.ok("POST", CM, configmap("a"))
    events = await http.watch(
        CM,
        sendInitialEvents="true",
        allowWatchBookmarks="true",
        resourceVersionMatch="NotOlderThan",
        max_events=2,
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert meta_of(events[1])["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_too_old_resource_version_gets_410_gone() -> None:
    async with (
        KubernetesEmulator(history_size=5) as emu,
        aiohttp.ClientSession(emu.url, headers=admin_headers(emu)) as session,
    ):
        http = Http(session)
        first = await http.ok("POST", CM, configmap("a"))
        for i in range(10):
            await http.ok("PATCH", f"{CM}/a", {"data": {"i": str(i)}})
        events = await http.watch(
            CM, resourceVersion=first["metadata"]["resourceVersion"], timeoutSeconds="2"
        )
        assert len(events) == 1
        assert events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
        recent = (await http.ok("GET", CM))["metadata"]["resourceVersion"]
        assert await http.watch(CM, resourceVersion=str(int(recent) - 2), timeoutSeconds="0.3") != []


async def test_watch_label_selector_turns_relabelling_into_added_and_deleted(http: Http) -> None:
    await http.ok("POST", CM, configmap("a", {"app": "web"}))
    start = (await http.ok("GET", CM))["metadata"]["resourceVersion"]
    await http.ok("POST", CM, configmap("other", {"app": "db"}))
    await http.ok("PATCH", f"{CM}/a", {"metadata": {"labels": {"app": "db"}}})
    await http.ok("PATCH", f"{CM}/a", {"metadata": {"labels": {"app": "web"}}})
    await http.ok("PATCH", f"{CM}/a", {"data": {"k": "v"}})
    events = await http.watch(CM, resourceVersion=start, labelSelector="app=web", timeoutSeconds="0.5")
    assert [(e["type"], meta_of(e)["name"]) for e in events] == [
        ("DELETED", "a"),
        ("ADDED", "a"),
        ("MODIFIED", "a"),
    ]


async def test_namespaced_and_cluster_wide_watches(http: Http) -> None:
    start = (await http.ok("GET", CM))["metadata"]["resourceVersion"]
    await http.ok("POST", CM, configmap("here"))
    await http.ok("POST", "/api/v1/namespaces/there/configmaps", configmap("there"))
    scoped = await http.watch(CM, resourceVersion=start, timeoutSeconds="0.4")
    assert [meta_of(e)["name"] for e in scoped] == ["here"]
    everywhere = await http.watch("/api/v1/configmaps", resourceVersion=start, timeoutSeconds="0.4")
    assert [meta_of(e)["name"] for e in everywhere] == ["here", "there"]
    by_field = await http.watch(
        "/api/v1/configmaps", resourceVersion=start, fieldSelector="metadata.name=there", timeoutSeconds="0.4"
    )
    assert [meta_of(e)["name"] for e in by_field] == ["there"]
    legacy = await http.watch(
        "/api/v1/watch/namespaces/default/configmaps", resourceVersion=start, timeoutSeconds="0.4"
    )
    assert [meta_of(e)["name"] for e in legacy] == ["here"]


async def test_many_watchers_see_the_same_events(http: Http) -> None:
    start = (await http.ok("GET", CM))["metadata"]["resourceVersion"]
    watches = [
        asyncio.create_task(http.watch(CM, resourceVersion=start, max_events=3, timeoutSeconds="3"))
        for _ in range(5)
    ]
    await asyncio.sleep(0.2)
    for name in ("a", "b", "c"):
        await http.ok("POST", CM, configmap(name))
    results = await asyncio.gather(*watches)
    assert all([meta_of(e)["name"] for e in r] == ["a", "b", "c"] for r in results)


async def test_stop_ends_open_watch_streams() -> None:
    emu = KubernetesEmulator()
    await emu.start()
    async with (
        aiohttp.ClientSession(emu.url, headers=admin_headers(emu)) as session,
        session.get(CM, params={"watch": "true"}) as rsp,
    ):
        assert rsp.status == 200
        loop = asyncio.get_running_loop()
        started = loop.time()
        await emu.stop()
        remainder = await asyncio.wait_for(rsp.content.read(), 5)
        assert loop.time() - started < 4
        assert all(json.loads(line)["type"] == "ADDED" for line in remainder.splitlines() if line.strip())

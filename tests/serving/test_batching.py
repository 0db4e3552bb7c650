"""Micro-batching: concurrent callers share model calls and each gets exactly its own answer."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from mlcanary_serving.batching import MicroBatcher
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_data, demo_pipeline

from .conftest import ServerProcess

X, _, _ = demo_data()


def ident(calls: list[int]) -> object:
    def fn(M: np.ndarray) -> list[float]:
        calls.append(M.shape[0])
        return M[:, 0].tolist()

    return fn


async def test_each_caller_gets_its_own_rows() -> None:
    calls: list[int] = []
    b: MicroBatcher[float] = MicroBatcher(ident(calls), max_batch_rows=64)  # type: ignore[arg-type]
    inputs = [np.full((1 + i % 3, 2), float(i)) for i in range(100)]
    results = await asyncio.gather(*(b.submit(x) for x in inputs))
    for i, (x, r) in enumerate(zip(inputs, results, strict=True)):
        assert r == [float(i)] * x.shape[0]
    assert sum(calls) == sum(x.shape[0] for x in inputs)
    assert len(calls) < 10 and max(calls) <= 64  # batched, and capped


async def test_lone_request_does_not_wait() -> None:
    loop = asyncio.get_running_loop()
    waiting: MicroBatcher[float] = MicroBatcher(ident([]), max_wait_s=0.3)  # type: ignore[arg-type]
    t0 = loop.time()
    assert await waiting.submit(np.ones((1, 2))) == [1.0]
    assert loop.time() - t0 >= 0.29  # control: a bounded wait does delay a lone request
    eager: MicroBatcher[float] = MicroBatcher(ident([]), max_wait_s=0)  # type: ignore[arg-type]
    t0 = loop.time()
    assert await eager.submit(np.ones((1, 2))) == [1.0]
    assert loop.time() - t0 < 0.15


async def test_bounded_wait_collects_late_arrivals() -> None:
    calls: list[int] = []
    b: MicroBatcher[float] = MicroBatcher(ident(calls), max_batch_rows=64, max_wait_s=0.05)  # type: ignore[arg-type]

    async def late(i: int) -> list[float]:
        await asyncio.sleep(0.005 * i)
        return await b.submit(np.full((1, 2), float(i)))

    res = await asyncio.gather(*(late(i) for i in range(5)))
    assert res == [[float(i)] for i in range(5)]
    assert calls == [5]


async def test_model_error_reaches_every_caller_of_the_batch() -> None:
    def boom(M: np.ndarray) -> list[float]:
        raise RuntimeError("model exploded")

    b: MicroBatcher[float] = MicroBatcher(boom)
    res = await asyncio.gather(*(b.submit(np.ones((1, 2))) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in res)
    # and the batcher still works afterwards
    b.fn = lambda M: M[:, 0].tolist()
    assert await b.submit(np.ones((1, 2))) == [1.0]


async def test_executor_batches_while_the_model_runs() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def slow(M: np.ndarray) -> list[float]:
        calls.append(M.shape[0])
        gate.wait(1)
        return M[:, 0].tolist()

    with ThreadPoolExecutor(1) as ex:
        b: MicroBatcher[float] = MicroBatcher(slow, executor=ex)
        first = asyncio.ensure_future(b.submit(np.full((1, 2), -1.0)))
        await asyncio.sleep(0.02)  # first batch is now running in the thread
        rest = [asyncio.ensure_future(b.submit(np.full((1, 2), float(i)))) for i in range(20)]
        await asyncio.sleep(0.02)
        gate.set()
        assert await first == [-1.0]
        assert [await r for r in rest] == [[float(i)] for i in range(20)]
    assert calls == [1, 20]


@pytest.mark.parametrize("kind", ["onnx", "joblib"])
def test_concurrent_http_callers_get_their_own_answers(
    start_server: object, bundles: dict[str, BuildResult], kind: str
) -> None:
    """Real server, 64 threads x 10 requests with distinct rows: every answer matches its row."""
    srv: ServerProcess = start_server(["--bundle", str(bundles[kind].path)])  # type: ignore[operator]
    srv.wait_state("ready")
    expected = demo_pipeline().predict_proba(X)[:, 1]

    def worker(w: int) -> list[tuple[int, float, int]]:
        out = []
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for k in range(10):
                i = (w * 10 + k) % len(X)
                r = c.post("/predict", json={"features": X[i].tolist()}).json()
                out.append((i, r["score"], r["prediction"]))
        return out

    with ThreadPoolExecutor(64) as ex:
        results = [x for chunk in ex.map(worker, range(64)) for x in chunk]
    assert len(results) == 640
    for i, score, label in results:
        assert score == pytest.approx(expected[i], abs=1e-6), i
        assert label == int(expected[i] > 0.5)

"""The load generator's log of recent rows (what the example retraining job learns from)."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

from aiohttp import web

from mlcanary_local.loadgen import LoadGenerator, demo_dataset


async def test_row_log_keeps_the_most_recent_rows_sent_with_their_true_labels(tmp_path: Path) -> None:
    received: list[list[float]] = []

    async def predict(request: web.Request) -> web.Response:
        received.append((await request.json())["features"])
        return web.json_response({"prediction": 0})

    app = web.Application()
    app.router.add_post("/predict", predict)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    log = tmp_path / "rows.csv"
    try:
        gen = LoadGenerator(
            f"http://127.0.0.1:{port}/predict",
            200,
            tmp_path / "requests.csv",
            shift=1.5,
            row_log=log,
            row_log_max=50,
        )
        await gen.run(asyncio.Event(), duration=1.0)
    finally:
        await runner.cleanup()

    rows, labels, names = demo_dataset()
    with log.open() as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == [*names, "label"]
    logged = lines[1:]
    assert len(received) > 50 and len(logged) == 50  # capped at --log-rows-max, most recent kept
    by_row = {tuple(round(v * 1.5, 4) for v in row): label for row, label in zip(rows, labels, strict=True)}
    for line in logged:
        key = tuple(round(float(v), 4) for v in line[:-1])
        assert by_row[key] == int(line[-1])  # the shifted row that was sent, with its own label
    sent_last = [tuple(round(v, 4) for v in r) for r in received[-50:]]
    assert [tuple(round(float(v), 4) for v in line[:-1]) for line in logged] == sent_last

"""Sliding-window PSI: exact window contents, chunked updates, the PSI formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlcanary_serving.drift import WindowDrift, psi

EDGES = [[-1.0, 0.0, 1.0], [0.5]]
PROPS = [[0.2, 0.3, 0.3, 0.2], [0.5, 0.5]]


def brute_counts(rows: np.ndarray, window: int) -> list[np.ndarray]:
    last = rows[-window:]
    out = []
    for j, e in enumerate(EDGES):
        idx = np.searchsorted(np.asarray(e), last[:, j], side="left")
        out.append(np.bincount(idx, minlength=len(e) + 1))
    return out


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_window_holds_exactly_the_last_rows(chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    w = WindowDrift(EDGES, PROPS, window=50, chunk_rows=chunk)
    seen = []
    for _ in range(120):
        x = rng.normal(size=(int(rng.integers(1, 9)), 2))
        seen.append(x)
        w.update(x)
        rows = np.concatenate(seen)
        assert w.rows == min(50, len(rows))
        counts = w._counts.reshape(2, w.n_bins)
        for j, expected in enumerate(brute_counts(rows, 50)):
            assert counts[j, : len(expected)].tolist() == expected.tolist()


def test_batch_larger_than_window() -> None:
    w = WindowDrift(EDGES, PROPS, window=10)
    x = np.linspace(-3, 3, 40).reshape(20, 2)
    w.update(x)
    assert w.rows == 10
    assert w._counts.reshape(2, w.n_bins)[0].sum() == 10


def test_psi_formula() -> None:
    e, a = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert psi(e, a) == pytest.approx(expected)
    assert psi(e, e) == pytest.approx(0.0)
    assert np.isfinite(psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])))  # empty bins are floored


def test_same_distribution_low_psi_shifted_high() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20000)
    edges = np.quantile(ref, np.linspace(0, 1, 11)[1:-1]).tolist()
    props = [0.1] * 10
    w = WindowDrift([edges], [props], window=1000)
    w.update(rng.normal(size=(1000, 1)))
    assert w.psi()[0] < 0.05
    w.update(rng.normal(loc=1.0, size=(1000, 1)))
    assert w.psi()[0] > 0.5

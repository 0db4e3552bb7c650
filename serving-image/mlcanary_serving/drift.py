"""Input and prediction drift: PSI of a sliding window of recent rows against reference bins.

Per batch, every row's bin index per feature is computed in one vectorised comparison and the
window's per-bin counts are updated incrementally (add the new rows, subtract the rows they push
out of the ring buffer), so the request path pays a few microseconds; PSI itself is computed only
when Prometheus scrapes.
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

EPS = 1e-4  # floor for empty bins so PSI stays finite


def psi(expected: npt.NDArray[np.float64], actual: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Population stability index along the last axis: sum((a - e) * ln(a / e))."""
    e = np.clip(expected, EPS, None)
    a = np.clip(actual, EPS, None)
    e = e / e.sum(axis=-1, keepdims=True)
    a = a / a.sum(axis=-1, keepdims=True)
    return np.asarray(np.sum((a - e) * np.log(a / e), axis=-1), dtype=np.float64)


class WindowDrift:
    """Sliding-window bin counts for ``k`` columns with per-column inner edges.

    ``update`` only queues the rows; they are binned in chunks of ``chunk_rows`` (one vectorised
    pass instead of one per request) and before any read (``rows``, ``psi``), so reads are exact.

    ``share``: a path prefix when several worker processes serve one pod. Each worker then mirrors
    its window's counts into ``<share>-<pid>.bin`` (a memory map: a copy of a few hundred integers,
    no system call), and ``rows``/``psi`` read the pod's window: the sum over the live workers'
    files. Rows are then binned at every update (one vectorised pass per micro-batch), since a
    scrape cannot make another process bin what it has queued.
    """

    def __init__(
        self,
        edges: Sequence[Sequence[float]],
        proportions: Sequence[Sequence[float]],
        window: int,
        chunk_rows: int = 64,
        share: str | None = None,
    ):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.k = len(edges)
        self.window = window
        self.n_bins = max((len(e) + 1 for e in edges), default=1)
        # (k, n_bins-1) edge matrix padded with +inf: a value is never > inf, so padding adds 0
        self._edges = np.full((self.k, max(self.n_bins - 1, 1)), np.inf)
        self._ref = np.zeros((self.k, self.n_bins))
        self._valid = np.zeros((self.k, self.n_bins), dtype=bool)
        for i, (e, p) in enumerate(zip(edges, proportions, strict=True)):
            self._edges[i, : len(e)] = e
            self._ref[i, : len(p)] = p
            self._valid[i, : len(p)] = True
        self._offsets = (np.arange(self.k) * self.n_bins)[None, :]
        self._ring = np.zeros((window, self.k), dtype=np.int32)  # flat bin index per row/column
        self._counts = np.zeros(self.k * self.n_bins, dtype=np.int64)
        self._filled = np.zeros(window, dtype=bool)
        self.chunk_rows = chunk_rows if share is None else 1
        self._queue: list[npt.NDArray[np.float64]] = []
        self._queued = 0
        self._pos = 0
        self._rows = 0
        self._lock = threading.Lock()
        self._share = share
        self._mirror: npt.NDArray[np.int64] | None = None
        if share is not None:  # counts, then the row count
            path = f"{share}-{os.getpid()}.bin"
            self._mirror = np.memmap(path, dtype=np.int64, mode="w+", shape=(self._counts.size + 1,))

    @property
    def rows(self) -> int:
        self.flush()
        return self._rows if self._share is None else int(self._pod_counts()[-1])

    def _pod_counts(self) -> npt.NDArray[np.int64]:
        """Counts then rows, summed over the live workers' mirrors (this process's included)."""
        total = np.zeros(self._counts.size + 1, dtype=np.int64)
        for path in glob.glob(f"{glob.escape(self._share or '')}-*.bin"):
            pid = int(path.rsplit("-", 1)[1].removesuffix(".bin"))
            if pid != os.getpid() and not _alive(pid):
                continue  # a worker that died: its window is no longer the pod's
            data = np.fromfile(path, dtype=np.int64)
            if data.size == total.size:
                total += data
        return total

    def update(self, X: npt.NDArray[np.float64]) -> None:
        """Add rows (shape (n, k)); the oldest rows leave the window."""
        if X.shape[0] == 0:
            return
        with self._lock:
            self._queue.append(X)
            self._queued += X.shape[0]
            full = self._queued >= self.chunk_rows
        if full:
            self.flush()

    def flush(self) -> None:
        """Bin the queued rows into the window."""
        with self._lock:
            if not self._queue:
                return
            queue, self._queue, self._queued = self._queue, [], 0
        self._apply(queue[0] if len(queue) == 1 else np.concatenate(queue))

    def _apply(self, X: npt.NDArray[np.float64]) -> None:
        if X.shape[0] > self.window:
            X = X[-self.window :]
        idx = (X[:, :, None] > self._edges[None, :, :]).sum(axis=2) + self._offsets  # (n, k) flat idx
        n = idx.shape[0]
        with self._lock:
            end = self._pos + n
            if end <= self.window:
                slots: slice | npt.NDArray[np.intp] = slice(self._pos, end)
            else:
                slots = np.arange(self._pos, end) % self.window
            filled = self._filled[slots]
            if filled.any():
                self._counts -= np.bincount(self._ring[slots][filled].ravel(), minlength=self._counts.size)
            self._filled[slots] = True
            self._ring[slots] = idx
            self._counts += np.bincount(idx.ravel(), minlength=self._counts.size)
            self._pos = end % self.window
            self._rows = min(self.window, self._rows + n)
            if self._mirror is not None:
                self._mirror[:-1] = self._counts
                self._mirror[-1] = self._rows

    def psi(self) -> npt.NDArray[np.float64]:
        """PSI per column over the current window (zeros when the window is empty)."""
        self.flush()
        if self._share is None:
            with self._lock:
                flat, rows = self._counts.copy(), self._rows
        else:
            pod = self._pod_counts()
            flat, rows = pod[:-1], int(pod[-1])
        counts = flat.reshape(self.k, self.n_bins).astype(np.float64)
        out = np.zeros(self.k)
        if rows == 0:
            return out
        for i in range(self.k):
            v = self._valid[i]
            out[i] = psi(self._ref[i, v], counts[i, v] / rows)
        return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, another user's
        return True
    return True

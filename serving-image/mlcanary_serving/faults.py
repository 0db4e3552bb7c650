"""Fault injection for tests and demos. Off unless set through environment variables:

- ``MLCANARY_FAULT_ERROR_RATE``: share of prediction requests (0..1) answered with HTTP 500;
- ``MLCANARY_FAULT_LATENCY_MS``: milliseconds added to every prediction request
  (``MLCANARY_FAULT_LATENCY_JITTER_MS`` adds a uniform random 0..J on top);
- ``MLCANARY_FAULT_DEGENERATE``: ``1``/``true`` makes every prediction the same constant answer
  with HTTP 200 (the first class, probability 1; 0.0 for regression);
  ``MLCANARY_FAULT_DEGENERATE_VALUE`` picks the constant label/value instead.
- ``MLCANARY_FAULT_SEED``: seed of the error-rate dice (reproducible demos).

Metrics record what was served, so injected errors count as ``server_error`` and degenerate
answers show in the prediction distribution.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

TRUE = ("1", "true", "yes", "on")


class FaultConfigError(ValueError):
    pass


class InjectedFault(Exception):
    """Raised on purpose by ``MLCANARY_FAULT_ERROR_RATE``: answered 500 and counted as server_error."""


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    degenerate: bool = False
    degenerate_value: str | None = None
    seed: int | None = None

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0 or self.latency_jitter_ms > 0 or self.degenerate

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Faults:
        def num(key: str, lo: float, hi: float | None) -> float:
            raw = env.get(key, "").strip()
            if not raw:
                return 0.0
            try:
                v = float(raw)
            except ValueError as exc:
                raise FaultConfigError(f"{key}={raw!r} is not a number") from exc
            if not (v >= lo and (hi is None or v <= hi)):
                raise FaultConfigError(f"{key}={raw!r} must be in [{lo}, {hi if hi is not None else 'inf'}]")
            return v

        seed_raw = env.get("MLCANARY_FAULT_SEED", "").strip()
        return cls(
            error_rate=num("MLCANARY_FAULT_ERROR_RATE", 0.0, 1.0),
            latency_ms=num("MLCANARY_FAULT_LATENCY_MS", 0.0, 600_000.0),
            latency_jitter_ms=num("MLCANARY_FAULT_LATENCY_JITTER_MS", 0.0, 600_000.0),
            degenerate=env.get("MLCANARY_FAULT_DEGENERATE", "").strip().lower() in TRUE,
            degenerate_value=env.get("MLCANARY_FAULT_DEGENERATE_VALUE") or None,
            seed=int(seed_raw) if seed_raw else None,
        )


class FaultInjector:
    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)  # not for security: a demo's dice

    def should_fail(self) -> bool:
        rate = self.faults.error_rate
        return rate > 0 and (rate >= 1.0 or self._rng.random() < rate)

    def delay_s(self) -> float:
        f = self.faults
        ms = f.latency_ms + (self._rng.uniform(0, f.latency_jitter_ms) if f.latency_jitter_ms else 0.0)
        return ms / 1000.0

"""Go-style durations ("1m30s", "500ms", "2h") as used throughout Kubernetes manifests.

Pure: no I/O. The API keeps durations as strings (what users write and `kubectl get` shows back);
code converts them with :func:`parse_duration` at the point of use.
"""

from __future__ import annotations

import re
from datetime import timedelta

# At most four parts of at most six digits each ("999999h" is 114 years): nothing a user can write
# overflows a timedelta or Go's time.Duration (which the API server's CEL uses, up to ~292 years).
DURATION_PATTERN = r"^([0-9]{1,6}(\.[0-9]{1,6})?(ms|s|m|h)){1,4}$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parse "1m30s" to a timedelta; raise ValueError naming the text when it is not a duration.

    >>> parse_duration("1m30s").total_seconds()
    90.0
    """
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration (examples: 30s, 5m, 1h30m, 500ms)")
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta as a PromQL range ("90s", "1500ms"): whole seconds where possible."""
    millis = round(delta.total_seconds() * 1000)
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"

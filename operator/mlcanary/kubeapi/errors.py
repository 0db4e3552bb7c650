"""The client-side error of a failed API call, from the server's ``Status`` body."""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """A non-2xx answer: HTTP status, the Status ``reason`` (e.g. ``AlreadyExists``) and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: a stale resourceVersion (``Conflict``) or a name taken (``AlreadyExists``)."""
        return self.status == 409

    @classmethod
    def from_body(cls, status: int, body: bytes | str) -> ApiError:
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        reason, message = "", text
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            reason = str(parsed.get("reason") or "")
            message = str(parsed.get("message") or text)
        return cls(status, reason, message[:1000])

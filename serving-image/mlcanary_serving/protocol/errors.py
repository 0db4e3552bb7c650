"""The one exception a request can raise for its own faults, and every error code an answer can carry."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

ERROR_CODES: Final = (
    # 400: the body cannot be read as JSON, or a header is malformed
    "malformed_json",
    "malformed_body",
    "bad_header",
    "client_disconnected",
    "invalid_input",
    # 413
    "too_large",
    # 404
    "not_found",
    "unknown_request_id",
    # 422: the JSON is well formed but not a valid request
    "missing_field",
    "unknown_field",
    "duplicate",
    "ambiguous",
    "wrong_type",
    "wrong_shape",
    "wrong_feature_count",
    "unknown_feature",
    "missing_feature",
    "unknown_output",
    "unknown_class",
    "wrong_count",
    "not_finite",
    "out_of_range",
    "empty_batch",
    "too_many_rows",
    "too_many_inputs",
    "unsupported",
    # 404 / 405 from the router
    "http_error",
    # 503 / 500: the server's side
    "not_ready",
    "injected_fault",
    "internal",
)
"""Values of ``code`` in error bodies (the OpenAPI document enumerates them)."""


class InputError(Exception):
    """A request the server refuses; ``status`` is a 4xx code, ``field`` names the culprit."""

    def __init__(self, status: int, message: str, field: str | None, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code


class OutOfRange(InputError):
    """A value outside the schema's range with ``MLCANARY_OUT_OF_RANGE=reject``; counted per feature."""

    def __init__(self, message: str, field: str, counts: npt.NDArray[np.int64]) -> None:
        super().__init__(422, message, field, "out_of_range")
        self.counts = counts

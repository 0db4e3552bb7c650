"""``POST /feedback``: ground truth for an earlier answer, or for rows sent along with it::

{"request_id": "<id of an earlier answer>", "label": 1}        (or "labels": [...] for a batch)
{"features": [...], "label": 1}                                predict and compare in one call
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .codec import check_fields, type_name, want_object
from .errors import InputError
from .simple import parse_rows, rows_field
from .validator import Validator

REQUEST_FIELDS = ("request_id", "label", "labels", "features", "instances")
LABEL_TYPES = (int, float, str, bool)


@dataclass(frozen=True)
class Feedback:
    truth: list[Any]
    single: bool  # sent as "label": answer with one boolean
    request_id: str | None  # feedback for this earlier answer ...
    X: npt.NDArray[np.float64] | None  # ... or for these rows
    field: str = "features"  # the request field holding the rows ...
    indexed_rows: bool = False  # ... a batch of them (errors name field[i])


def parse_feedback(obj: Any, v: Validator) -> Feedback:
    body = want_object(obj, "body")
    check_fields(body, REQUEST_FIELDS)
    if "label" in body and "labels" in body:
        raise InputError(422, "send either 'label' or 'labels', not both", "labels", "ambiguous")
    if "labels" in body:
        truth = body["labels"]
        if type(truth) is not list or not truth:
            raise InputError(422, "labels: expected a non-empty array", "labels", "wrong_type")
        if len(truth) > v.max_rows:
            raise InputError(
                422,
                f"labels: {len(truth)} labels exceed the limit of {v.max_rows}",
                "labels",
                "too_many_rows",
            )
    elif "label" in body:
        truth = [body["label"]]
    else:
        raise InputError(422, "missing field 'label' (or 'labels')", "label", "missing_field")
    single = "label" in body
    for i, t in enumerate(truth):
        if type(t) not in LABEL_TYPES or (type(t) is float and not math.isfinite(t)):
            f = "label" if single else f"labels[{i}]"
            raise InputError(
                422, f"{f}: expected a class label, got {type_name(t)} {t!r:.40}", f, "wrong_type"
            )
    has_rows = "features" in body or "instances" in body
    if "request_id" in body:
        if has_rows:
            raise InputError(
                422, "send either 'request_id' or 'features', not both", "request_id", "ambiguous"
            )
        target = body["request_id"]
        if type(target) is not str:
            raise InputError(
                422, f"request_id: expected a string, got {type_name(target)}", "request_id", "wrong_type"
            )
        return Feedback(truth, single, target, None)
    if not has_rows:
        raise InputError(422, "missing field 'request_id' (or 'features')", "request_id", "missing_field")
    field = rows_field(body)
    parsed = parse_rows(body[field], field, v)
    X = parsed.X
    if X.shape[0] != len(truth):
        raise InputError(422, f"{X.shape[0]} rows but {len(truth)} labels", "labels", "wrong_count")
    return Feedback(truth, single, None, X, field, parsed.indexed_rows)

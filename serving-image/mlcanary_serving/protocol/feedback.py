"""``POST /feedback``: ground truth for an earlier answer, or for rows sent along with it::

{"request_id": "<id of an earlier answer>", "label": 1}        (or "labels": [...] for a batch)
{"features": [...], "label": 1}                                predict and compare in one call
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InputError
from .simple import parse_simple
from .validator import Validator

LABEL_TYPES = (int, float, str, bool)


@dataclass(frozen=True)
class Feedback:
    truth: list[Any]
    single: bool  # sent as "label": answer with one boolean
    request_id: str | None  # feedback for this earlier answer ...
    X: npt.NDArray[np.float64] | None  # ... or for these rows


def parse_feedback(obj: Any, v: Validator) -> Feedback:
    if type(obj) is not dict:
        raise InputError(422, "request body must be a JSON object", "body", "wrong_type")
    if "label" in obj and "labels" in obj:
        raise InputError(422, "send either 'label' or 'labels', not both", "labels", "ambiguous")
    if "labels" in obj:
        truth = obj["labels"]
        if type(truth) is not list or not truth:
            raise InputError(422, "labels: expected a non-empty array", "labels", "wrong_type")
    elif "label" in obj:
        truth = [obj["label"]]
    else:
        raise InputError(422, "missing field 'label' (or 'labels')", "label", "missing_field")
    single = "labels" not in obj
    for i, t in enumerate(truth):
        if type(t) not in LABEL_TYPES:
            f = "label" if single else f"labels[{i}]"
            raise InputError(422, f"{f}: expected a class label", f, "wrong_type")
    if "request_id" in obj:
        target = obj["request_id"]
        if type(target) is not str:
            raise InputError(422, "request_id: expected a string", "request_id", "wrong_type")
        return Feedback(truth, single, target, None)
    if "features" in obj or "instances" in obj:
        X = parse_simple(obj, v).X
        if X.shape[0] != len(truth):
            raise InputError(422, f"{X.shape[0]} rows but {len(truth)} labels", "labels", "wrong_count")
        return Feedback(truth, single, None, X)
    raise InputError(422, "missing field 'request_id' (or 'features')", "request_id", "missing_field")

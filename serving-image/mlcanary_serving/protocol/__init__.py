"""Wire protocols: request bodies -> validated float matrix, results -> response bodies.

Pure functions (no I/O, no model, no metrics), so every bad-input rule is testable on its own.
``simple`` (``/predict``), ``v2`` (Open Inference Protocol), ``feedback``; ``validator`` checks rows
against the bundle's feature schema; ``codec`` parses JSON and holds the typed accessors. Every
rejection is an ``InputError`` with an HTTP status, a ``code`` from ``ERROR_CODES`` and the field
it is about.
"""

from __future__ import annotations

from .codec import dumps, loads
from .errors import ERROR_CODES, InputError, OutOfRange
from .simple import Parsed, Row, parse_simple
from .v2 import parse_v2
from .validator import Validator

__all__ = [
    "ERROR_CODES",
    "InputError",
    "OutOfRange",
    "Parsed",
    "Row",
    "Validator",
    "dumps",
    "loads",
    "parse_simple",
    "parse_v2",
]

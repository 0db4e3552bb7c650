"""Object names, label keys and values, annotations: the checks and messages of a real API server.

The messages are apimachinery's (``k8s.io/apimachinery/pkg/util/validation``), so a client sees the same
422 as from a real cluster, e.g. ``metadata.name: Invalid value: "1abc": a DNS-1035 label must consist
of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an
alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is
'[a-z]([-a-z0-9]*[a-z0-9])?')``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from kube_emulator.errors import Cause

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + r"(\." + DNS1123_LABEL_FMT + ")*"
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"

_DNS1123_LABEL = re.compile(f"^{DNS1123_LABEL_FMT}$")
_DNS1123_SUBDOMAIN = re.compile(f"^{DNS1123_SUBDOMAIN_FMT}$")
_DNS1035_LABEL = re.compile(f"^{DNS1035_LABEL_FMT}$")
_QUALIFIED_NAME = re.compile(f"^{QUALIFIED_NAME_FMT}$")
_LABEL_VALUE = re.compile(f"^{LABEL_VALUE_FMT}$")

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
DNS1035_LABEL_MAX = 63
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
ANNOTATIONS_TOTAL_MAX = 256 * 1024  # bytes of keys + values (TotalAnnotationSizeLimitB)
GENERATED_SUFFIX = 5  # random characters appended to generateName
MAX_GENERATED_BASE = 63 - GENERATED_SUFFIX  # generateName is cut to this before the suffix


def _max_len(limit: int) -> str:
    return f"must be no more than {limit} characters"


def dns1123_label(value: str) -> list[str]:
    errors = []
    if len(value) > DNS1123_LABEL_MAX:
        errors.append(_max_len(DNS1123_LABEL_MAX))
    if not _DNS1123_LABEL.match(value):
        errors.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
            "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
            f"for validation is '{DNS1123_LABEL_FMT}')"
        )
    return errors


def dns1123_subdomain(value: str) -> list[str]:
    errors = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errors.append(_max_len(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN.match(value):
        errors.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
            "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
            f"for validation is '{DNS1123_SUBDOMAIN_FMT}')"
        )
    return errors


def dns1035_label(value: str) -> list[str]:
    errors = []
    if len(value) > DNS1035_LABEL_MAX:
        errors.append(_max_len(DNS1035_LABEL_MAX))
    if not _DNS1035_LABEL.match(value):
        errors.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
            "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
            f"regex used for validation is '{DNS1035_LABEL_FMT}')"
        )
    return errors


def path_segment(value: str) -> list[str]:
    """RBAC object names: anything usable as one URL path segment."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


@functools.lru_cache(maxsize=8192)
def _qualified_name(value: str) -> tuple[str, ...]:
    return tuple(_qualified_name_errors(value))


def qualified_name(value: str) -> list[str]:
    """Label and annotation keys (results cached: the same keys come back on every write)."""
    return list(_qualified_name(value))


def _qualified_name_errors(value: str) -> list[str]:
    """Label and annotation keys: an optional DNS-subdomain prefix and '/', then a name."""
    errors: list[str] = []
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend("prefix part " + e for e in dns1123_subdomain(prefix))
    if not name:
        errors.append("name part must be non-empty")
        return errors
    if len(name) > QUALIFIED_NAME_MAX:
        errors.append("name part " + _max_len(QUALIFIED_NAME_MAX))
    if not _QUALIFIED_NAME.match(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            f"validation is '{QUALIFIED_NAME_FMT}')"
        )
    return errors


def label_value(value: str) -> list[str]:
    return list(_label_value(value))


@functools.lru_cache(maxsize=8192)
def _label_value(value: str) -> tuple[str, ...]:
    return tuple(_label_value_errors(value))


def _label_value_errors(value: str) -> list[str]:
    errors = []
    if len(value) > LABEL_VALUE_MAX:
        errors.append(_max_len(LABEL_VALUE_MAX))
    if not _LABEL_VALUE.match(value):
        errors.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
            f"'12345', regex used for validation is '{LABEL_VALUE_FMT}')"
        )
    return errors


NameCheck = Callable[[str], list[str]]

# Which rule names each kind, as the real validation of each type does (the rest: DNS-1123 subdomain).
NAME_RULES: dict[tuple[str, str], NameCheck] = {
    ("", "namespaces"): dns1123_label,
    ("", "services"): dns1035_label,
    ("rbac.authorization.k8s.io", "roles"): path_segment,
    ("rbac.authorization.k8s.io", "rolebindings"): path_segment,
    ("rbac.authorization.k8s.io", "clusterroles"): path_segment,
    ("rbac.authorization.k8s.io", "clusterrolebindings"): path_segment,
}
# CronJob names stay 11 characters short of a label: its Jobs are named "<cronjob>-<minutes>".
MAX_NAME_LENGTH: dict[tuple[str, str], int] = {("batch", "cronjobs"): 52}


def quote(value: Any) -> str:
    """A value as Go's %q shows it in ``Invalid value: ...`` messages."""
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def invalid(field: str, value: Any, message: str) -> Cause:
    return Cause(field, "FieldValueInvalid", f"Invalid value: {quote(value)}: {message}")


def name_causes(key: tuple[str, str], name: str, *, generate_name: str | None = None) -> list[Cause]:
    """Causes for ``metadata.name`` (or ``metadata.generateName``, checked as a prefix) of a kind."""
    check = NAME_RULES.get(key, dns1123_subdomain)
    causes: list[Cause] = []
    if generate_name:
        # A prefix: a trailing '-' is allowed. The real server's maskTrailingDash replaces the last two
        # characters with "a" (sic); doing the same keeps the verdicts identical.
        masked = (
            generate_name[:-2] + "a"
            if len(generate_name) > 1 and generate_name.endswith("-")
            else generate_name
        )
        causes.extend(invalid("metadata.generateName", generate_name, e) for e in check(masked))
        if causes:
            return causes
    if not name:
        return causes
    causes.extend(invalid("metadata.name", name, e) for e in check(name))
    limit = MAX_NAME_LENGTH.get(key)
    if limit is not None and len(name) > limit:
        causes.append(invalid("metadata.name", name, _max_len(limit)))
    return causes


def generated_base(generate_name: str) -> str:
    return generate_name[:MAX_GENERATED_BASE]


def label_causes(labels: Any, field: str) -> list[Cause]:
    """Label keys and values under ``field`` (``metadata.labels``, ``spec.selector.matchLabels`` ...)."""
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [Cause(field, "FieldValueTypeInvalid", "Invalid value: must be an object")]
    if all(isinstance(v, str) for v in labels.values()):
        # The same label sets come back on every write of a kind: one cache lookup per set.
        return list(_string_label_causes(tuple(labels.items()), field))
    return _label_causes(labels, field)


@functools.lru_cache(maxsize=4096)
def _string_label_causes(items: tuple[tuple[str, str], ...], field: str) -> tuple[Cause, ...]:
    return tuple(_label_causes(dict(items), field))


def _label_causes(labels: Mapping[Any, Any], field: str) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in labels.items():
        causes.extend(invalid(field, key, e) for e in qualified_name(str(key)))
        if not isinstance(value, str):
            causes.append(
                Cause(f"{field}[{key}]", "FieldValueTypeInvalid", "Invalid value: must be a string")
            )
            continue
        causes.extend(invalid(field, value, e) for e in label_value(value))
    return causes


def annotation_causes(annotations: Any, field: str) -> list[Cause]:
    if annotations is None:
        return []
    if not isinstance(annotations, Mapping):
        return [Cause(field, "FieldValueTypeInvalid", "Invalid value: must be an object")]
    causes: list[Cause] = []
    total = 0
    for key, value in annotations.items():
        causes.extend(invalid(field, key, e) for e in qualified_name(str(key)))
        if not isinstance(value, str):
            causes.append(
                Cause(f"{field}[{key}]", "FieldValueTypeInvalid", "Invalid value: must be a string")
            )
            continue
        total += len(str(key)) + len(value.encode())
    if total > ANNOTATIONS_TOTAL_MAX:
        causes.append(
            Cause(field, "FieldValueTooLong", f"Too long: may not be more than {ANNOTATIONS_TOTAL_MAX} bytes")
        )
    return causes


def selector_causes(selector: Any, field: str) -> list[Cause]:
    """A LabelSelector (``matchLabels`` + ``matchExpressions``) as ValidateLabelSelector checks it."""
    if selector is None:
        return []
    if not isinstance(selector, Mapping):
        return [Cause(field, "FieldValueTypeInvalid", "Invalid value: must be an object")]
    causes = label_causes(selector.get("matchLabels"), f"{field}.matchLabels")
    for index, expression in enumerate(selector.get("matchExpressions") or []):
        where = f"{field}.matchExpressions[{index}]"
        if not isinstance(expression, Mapping):
            causes.append(Cause(where, "FieldValueTypeInvalid", "Invalid value: must be an object"))
            continue
        key = str(expression.get("key") or "")
        causes.extend(invalid(f"{where}.key", key, e) for e in qualified_name(key))
        operator = expression.get("operator")
        values = expression.get("values") or []
        if operator in ("In", "NotIn") and not values:
            causes.append(
                Cause(
                    f"{where}.values",
                    "FieldValueRequired",
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                )
            )
        elif operator in ("Exists", "DoesNotExist") and values:
            causes.append(
                Cause(
                    f"{where}.values",
                    "FieldValueForbidden",
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            )
        elif operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            causes.append(
                Cause(
                    f"{where}.operator",
                    "FieldValueNotSupported",
                    f'Unsupported value: {quote(operator)}: supported values: "DoesNotExist", "Exists", "In", "NotIn"',
                )
            )
        for v_index, value in enumerate(values):
            causes.extend(invalid(f"{where}.values[{v_index}]", value, e) for e in label_value(str(value)))
    return causes


def template_meta_causes(template: Any, field: str) -> list[Cause]:
    """Labels and annotations of an embedded object template (``spec.template`` ...)."""
    if not isinstance(template, Mapping):
        return []
    meta = template.get("metadata")
    if not isinstance(meta, Mapping):
        return []
    return label_causes(meta.get("labels"), f"{field}.metadata.labels") + annotation_causes(
        meta.get("annotations"), f"{field}.metadata.annotations"
    )

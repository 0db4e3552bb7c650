"""The four PATCH flavours of the Kubernetes API, on plain JSON-like values.

* JSON merge patch (RFC 7386): ``application/merge-patch+json``.
* JSON patch (RFC 6902, including ``test``): ``application/json-patch+json``.
* Strategic merge patch: ``application/strategic-merge-patch+json``. Without the Go types, lists of
  objects are merged by the merge keys of the well-known fields (``containers``, ``env``, ``ports`` ...);
  the directives kubectl generates (``$patch``, ``$retainKeys``, ``$setElementOrder/...``,
  ``$deleteFromPrimitiveList/...``) are honoured; every other list is replaced.
* Server-side apply (``application/apply-patch+yaml``) is a merge patch of the applied object; field
  ownership is not tracked.

All functions return new values and never mutate their inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PatchError(Exception):
    """A patch that cannot be applied. ``test_failed`` marks a failing JSON-patch ``test``."""

    def __init__(self, message: str, *, test_failed: bool = False) -> None:
        super().__init__(message)
        self.test_failed = test_failed


def clone(value: Any) -> Any:
    """A deep copy of a JSON-like value (much faster than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {k: clone(v) if isinstance(v, dict | list) else v for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) if isinstance(v, dict | list) else v for v in value]
    return value


# ------------------------------------------------------------------------------------ merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = merge_patch(result.get(key), value)
        else:
            result[key] = clone(value)
    return result


# ------------------------------------------------------------------------------------- JSON patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}: must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], part: str, *, for_insert: bool) -> int:
    if part == "-" and for_insert:
        return len(container)
    if not part.isdigit() or (part != "0" and part.startswith("0")):
        raise PatchError(f"invalid array index {part!r}")
    index = int(part)
    limit = len(container) if for_insert else len(container) - 1
    if index > limit:
        raise PatchError(f"array index {index} out of range")
    return index


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"doc is missing path: {path!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, for_insert=False)]
        else:
            raise PatchError(f"doc is missing path: {path!r}")
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"doc is missing path: {path!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_insert=False)]
    raise PatchError(f"doc is missing path: {path!r}")


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key {last!r}: missing value")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, for_insert=False))
    raise PatchError(f"doc is missing path: {path!r}")


def _add(doc: Any, path: str, value: Any, *, replace: bool = False) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing key: {path!r}")
        parent[last] = value
    elif isinstance(parent, list):
        if replace:
            parent[_index(parent, last, for_insert=False)] = value
        else:
            parent.insert(_index(parent, last, for_insert=True), value)
    else:
        raise PatchError(f"doc is missing path: {path!r}")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902. Raises :class:`PatchError` (``test_failed=True`` for a failing ``test``)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    result = clone(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], str(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{kind} operation needs a value: {op!r}")
        if kind == "add":
            result = _add(result, path, clone(op["value"]))
        elif kind == "replace":
            result = _add(result, path, clone(op["value"]), replace=True)
        elif kind == "remove":
            _remove(result, path)
        elif kind in ("move", "copy"):
            source = str(op.get("from", ""))
            if kind == "move" and (path + "/").startswith(source + "/") and path != source:
                raise PatchError(f"cannot move {source!r} into its own child {path!r}")
            value = _remove(result, source) if kind == "move" else clone(_get(result, source))
            result = _add(result, path, value)
        elif kind == "test":
            try:
                actual = _get(result, path)
            except PatchError:
                raise PatchError(f"testing value {path} failed: missing path", test_failed=True) from None
            if actual != op["value"]:
                raise PatchError(f"testing value {path} failed: test failed", test_failed=True)
        else:
            raise PatchError(f"unexpected JSON patch operation {kind!r}")
    return result


# ---------------------------------------------------------------------------- strategic merge patch

#: List fields merged element-by-element, with their merge keys (first one present is used).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "ports": ("containerPort", "port", "name"),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "topologySpreadConstraints": ("topologyKey",),
    "resourceClaims": ("name",),
}
#: Primitive lists merged as sets (``patchStrategy: merge`` on a list of strings).
MERGED_PRIMITIVE_LISTS = frozenset({"finalizers"})

_DELETE = object()


def _merge_key(field: str, elements: list[Any]) -> str | None:
    candidates = MERGE_KEYS.get(field)
    if not candidates:
        return None
    dicts = [e for e in elements if isinstance(e, dict)]
    for key in candidates:
        if dicts and all(key in e for e in dicts):
            return key
    return candidates[0] if not dicts else None


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _merge_list(field: str, target: list[Any], patch: list[Any]) -> list[Any]:
    if field in MERGED_PRIMITIVE_LISTS and all(not isinstance(v, dict | list) for v in patch):
        merged = list(target)
        merged.extend(v for v in patch if v not in merged)
        return merged
    key = _merge_key(field, patch)
    if key is None or not all(isinstance(e, dict) for e in patch):
        if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
            return [_strip_directives(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
        return [_strip_directives(e) for e in patch]
    if any(e.get("$patch") == "replace" for e in patch):
        return [_strip_directives(e) for e in patch if "$patch" not in e]
    result = [clone(e) for e in target]
    for element in patch:
        identity = element.get(key)
        position = next(
            (i for i, e in enumerate(result) if isinstance(e, dict) and e.get(key) == identity), None
        )
        if element.get("$patch") == "delete":
            if position is not None:
                result.pop(position)
            continue
        if position is None:
            result.append(_strip_directives(element))
        else:
            result[position] = strategic_merge_patch(result[position], element)
    return result


def _reorder(field: str, merged: list[Any], order: list[Any]) -> list[Any]:
    key = _merge_key(field, merged)

    def identity(element: Any) -> Any:
        return element.get(key) if key is not None and isinstance(element, dict) else element

    wanted = [identity(e) for e in order]
    ranked = {value: rank for rank, value in enumerate(wanted) if isinstance(value, str | int | float)}
    listed = [e for e in merged if identity(e) in ranked]
    listed.sort(key=lambda e: ranked[identity(e)])
    others = [e for e in merged if identity(e) not in ranked]
    return listed + others


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge patch, approximated without the API's Go types (see module doc)."""
    if not isinstance(patch, dict):
        return _strip_directives(clone(patch))
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip_directives(patch)
    result: dict[str, Any] = clone(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    retain: list[str] | None = None
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            if isinstance(value, list):
                orders[key.partition("/")[2]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.partition("/")[2]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if key == "$retainKeys":
            retain = [str(k) for k in value] if isinstance(value, list) else None
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            existing = result.get(key)
            result[key] = _merge_list(key, existing if isinstance(existing, list) else [], value)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(field, result[field], order)
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def apply_patch(target: Mapping[str, Any] | None, applied: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply, approximated as a merge of the applied configuration (no field ownership)."""
    merged = merge_patch(dict(target) if target else {}, dict(applied))
    assert isinstance(merged, dict)
    return merged

"""OpenAPI v3 documents (``/openapi/v3`` and ``/openapi/v3/<group-version>``) built from what is served.

kubectl needs them: ``kubectl explain`` reads the schemas, and kubectl's validation (``--validate``,
on by default) looks for the ``fieldValidation`` parameter on each kind's PATCH operation to hand
validation to the server (``fieldValidation=Strict``). Custom resources carry their CRD version's
``openAPIV3Schema`` (``metadata`` as a reference to ``ObjectMeta``, as a real server serves them);
built-in kinds get a compact schema (apiVersion, kind, metadata, the rest preserved). Documents are
built once per set of served resources and cached.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kube_emulator.resources import ResourceInfo, ResourceRegistry

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_OBJECT_META_SCHEMA: dict[str, Any] = {
    "description": "ObjectMeta is metadata that all persisted resources must have.",
    "type": "object",
    "properties": {
        "name": {"description": "Name must be unique within a namespace.", "type": "string"},
        "generateName": {"description": "An optional prefix for a generated name.", "type": "string"},
        "namespace": {"description": "The namespace of the object.", "type": "string"},
        "uid": {"description": "Unique in time and space; set by the server.", "type": "string"},
        "resourceVersion": {"description": "The version of the object; set by the server.", "type": "string"},
        "generation": {
            "description": "The generation of the desired state.",
            "type": "integer",
            "format": "int64",
        },
        "creationTimestamp": {
            "description": "When the object was created.",
            "type": "string",
            "format": "date-time",
        },
        "deletionTimestamp": {
            "description": "When the object will be deleted.",
            "type": "string",
            "format": "date-time",
        },
        "labels": {
            "description": "Labels.",
            "type": "object",
            "additionalProperties": {"type": "string", "default": ""},
        },
        "annotations": {
            "description": "Annotations.",
            "type": "object",
            "additionalProperties": {"type": "string", "default": ""},
        },
        "finalizers": {
            "description": "Finalizers.",
            "type": "array",
            "items": {"type": "string", "default": ""},
        },
        "ownerReferences": {
            "description": "Objects this object depends on.",
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "managedFields": {
            "description": "Field ownership.",
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    },
}
_QUERY = ("dryRun", "fieldManager", "fieldValidation", "pretty")


def _param(name: str, where: str = "query") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": where, "schema": {"type": "string", "uniqueItems": True}}
    if where == "path":
        param["required"] = True
    return param


def schema_name(info: ResourceInfo) -> str:
    if info.crd is not None:  # reversed group, as a real server names custom resource schemas
        return ".".join([*reversed(info.group.split(".")), info.version, info.kind])
    group = info.group.split(".")[0] if info.group else "core"
    return f"io.k8s.api.{group}.{info.version}.{info.kind}"


def _kind_schema(info: ResourceInfo) -> dict[str, Any]:
    gvk = [{"group": info.group, "kind": info.kind, "version": info.version}]
    meta_ref = {"allOf": [{"$ref": f"#/components/schemas/{OBJECT_META}"}], "default": {}}
    if info.schema is not None:
        schema = copy.deepcopy(info.schema.schema)
        properties = schema.setdefault("properties", {})
        properties["metadata"] = meta_ref
        properties.setdefault("apiVersion", {"type": "string"})
        properties.setdefault("kind", {"type": "string"})
    else:
        schema = {
            "description": f"{info.kind} ({info.api_version}). The emulator keeps a compact schema of built-in kinds.",
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": meta_ref,
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
            "x-kubernetes-preserve-unknown-fields": True,
        }
    schema["x-kubernetes-group-version-kind"] = gvk
    return schema


def _operations(info: ResourceInfo, ref: str) -> dict[str, dict[str, Any]]:
    """paths -> operations for one resource (collection and item, namespaced or not)."""
    base = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    scope = f"{base}/namespaces/{{namespace}}" if info.namespaced else base
    gvk = {"group": info.group, "kind": info.kind, "version": info.version}
    body = {"content": {"application/json": {"schema": {"$ref": ref}}}}
    answer = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}}
    path_params = [_param("namespace", "path")] if info.namespaced else []

    def op(action: str, *, with_body: bool = False, name: bool = False) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "operationId": f"{action}{info.kind}",
            "parameters": [*path_params, *([_param("name", "path")] if name else []), *map(_param, _QUERY)],
            "responses": answer,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        }
        if with_body:
            operation["requestBody"] = body
        return operation

    collection = f"{scope}/{info.plural}"
    item = f"{collection}/{{name}}"
    paths = {
        collection: {"get": op("list"), "post": op("post", with_body=True)},
        item: {
            "get": op("get", name=True),
            "put": op("put", with_body=True, name=True),
            "patch": op("patch", with_body=True, name=True),
            "delete": op("delete", name=True),
        },
    }
    if info.status_subresource:
        paths[f"{item}/status"] = {
            "get": op("get", name=True),
            "put": op("put", with_body=True, name=True),
            "patch": op("patch", with_body=True, name=True),
        }
    return paths


class OpenApiV3:
    """The documents, cached until the served resources change."""

    def __init__(self, registry: ResourceRegistry) -> None:
        self.registry = registry
        self._key: tuple[Any, ...] | None = None
        self._documents: dict[str, bytes] = {}
        self._hashes: dict[str, str] = {}

    def _refresh(self) -> None:
        infos = sorted(self.registry.all(), key=lambda i: (i.group, i.version, i.plural))
        key = tuple((i.group, i.version, i.plural, id(i.schema)) for i in infos)
        if key == self._key:
            return
        by_gv: dict[str, list[ResourceInfo]] = {}
        for info in infos:
            path = f"apis/{info.group}/{info.version}" if info.group else f"api/{info.version}"
            by_gv.setdefault(path, []).append(info)
        documents: dict[str, bytes] = {}
        for path, members in by_gv.items():
            schemas: dict[str, Any] = {OBJECT_META: _OBJECT_META_SCHEMA}
            paths: dict[str, Any] = {}
            for info in members:
                name = schema_name(info)
                schemas[name] = _kind_schema(info)
                paths.update(_operations(info, f"#/components/schemas/{name}"))
            document = {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.32.0"},
                "paths": paths,
                "components": {"schemas": schemas},
            }
            documents[path] = json.dumps(document, separators=(",", ":")).encode()
        self._documents = documents
        self._hashes = {p: hashlib.sha512(d).hexdigest()[:32].upper() for p, d in documents.items()}
        self._key = key

    def root(self) -> dict[str, Any]:
        self._refresh()
        return {
            "paths": {
                path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={self._hashes[path]}"}
                for path in sorted(self._documents)
            }
        }

    def document(self, path: str) -> bytes | None:
        """The JSON of one group-version's document (``apis/apps/v1``, ``api/v1``), or None."""
        self._refresh()
        return self._documents.get(path.strip("/"))

"""Generate the ModelDeployment CRD from the pydantic models, and check the committed copy.

``python -m mlcanary.crd`` prints the CRD; ``--write`` updates ``crds/`` and the chart's copy;
``--check`` exits 1 when either committed file differs from what the models generate (CI runs it, so
they cannot drift).

The pydantic JSON schema is turned into a Kubernetes *structural* schema: ``$ref`` inlined, optional
``anyOf [X, null]`` collapsed to ``X``, no ``additionalProperties: false`` beside ``properties``, no
``const``/``title``/``default`` (defaults are applied by the models, not by server-side defaulting).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

from mlcanary import models

CRD_FILENAME = f"{models.PLURAL}.{models.API_GROUP}.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO_ROOT / "crds" / CRD_FILENAME
# The Helm chart ships the same file (Helm installs crds/ of a chart on first install only).
CHART_PATH = REPO_ROOT / "charts" / "mlcanary" / "crds" / CRD_FILENAME

_DROP_KEYS = {"title", "default", "examples"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    return {key: _inline(value, defs) for key, value in node.items() if key != "$defs"}


def _structural(node: Any) -> Any:
    """Rewrite one inlined pydantic schema node into structural form."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        non_null = [option for option in any_of if option.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"cannot express a union of {len(non_null)} types structurally: {any_of}")
        # The field's own description wins over the referenced model's.
        node = {**non_null[0], **{k: v for k, v in node.items() if k != "anyOf"}}
    for key in _DROP_KEYS:
        node.pop(key, None)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if (
        node.get("type") == "number"
        and "exclusiveMinimum" in node
        and not isinstance(node["exclusiveMinimum"], bool)
    ):
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if (
        node.get("type") == "number"
        and "exclusiveMaximum" in node
        and not isinstance(node["exclusiveMaximum"], bool)
    ):
        node["maximum"] = node.pop("exclusiveMaximum")
        node["exclusiveMaximum"] = True
    if "properties" in node:
        node.pop("additionalProperties", None)
        node["properties"] = {name: _structural(prop) for name, prop in node["properties"].items()}
    elif isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"])
    elif node.get("additionalProperties") is False and node.get("type") == "object":
        # An empty object with no fields (ReplicaRouter): structural schemas need explicit properties.
        node.pop("additionalProperties")
        node["properties"] = {}
    elif node.get("type") == "object" and node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in node:
        node["items"] = _structural(node["items"])
    if node.get("format") == "date-time":
        node["type"] = "string"
    if "required" in node and not node["required"]:
        node.pop("required")
    return node


def model_schema(model: type[models.ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return dict(_structural(_inline(raw, defs)))


def openapi_schema() -> dict[str, Any]:
    spec = model_schema(models.ModelDeploymentSpec)
    status = model_schema(models.ModelDeploymentStatus)
    # The status is written only by the operator and read back into the models: keep it open so an
    # older operator never loses fields a newer one wrote (pruning would drop them).
    status["x-kubernetes-preserve-unknown-fields"] = True
    return {
        "type": "object",
        "description": "ModelDeployment serves a machine-learning model and rolls new versions out as "
        "canaries judged by metrics, input drift and prediction drift.",
        "required": ["spec"],
        # Children are named after the object (its Service needs a DNS-1035 label): refuse other names.
        "x-kubernetes-validations": [models.NAME_RULE],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{models.PLURAL}.{models.API_GROUP}",
            "labels": {"app.kubernetes.io/name": "mlcanary", "app.kubernetes.io/part-of": "mlcanary"},
        },
        "spec": {
            "group": models.API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": models.SHORT_NAMES,
                "categories": models.CATEGORIES,
            },
            "versions": [
                {
                    "name": models.API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion"},
                        {"name": "Canary", "type": "string", "jsonPath": ".status.canaryVersion"},
                        {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


HEADER = (
    "# GENERATED by `python -m mlcanary.crd --write` from operator/mlcanary/models.py. Do not edit:\n"
    "# CI runs `python -m mlcanary.crd --check` and fails when this file and the models differ.\n"
)


def render_crd() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlcanary crd", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="fail when the committed CRD differs")
    group.add_argument("--write", action="store_true", help="write the CRD file")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help="CRD file (default: %(default)s)")
    args = parser.parse_args(argv)
    rendered = render_crd()
    # The default target is both copies; an explicit --path names one file (used by tests).
    paths = [args.path] if args.path != DEFAULT_PATH else [DEFAULT_PATH, CHART_PATH]
    if args.write:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rendered)
            print(f"wrote {path}")
        return 0
    if args.check:
        stale = 0
        for path in paths:
            current = path.read_text() if path.exists() else ""
            if current == rendered:
                print(f"{path} is up to date")
                continue
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    rendered.splitlines(keepends=True),
                    fromfile=f"{path} (committed)",
                    tofile="generated from mlcanary.models",
                )
            )
            print(f"\n{path} is out of date: run `python -m mlcanary.crd --write`", file=sys.stderr)
        return 1 if stale else 0
    sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

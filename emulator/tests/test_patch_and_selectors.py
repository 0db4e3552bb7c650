"""Pure pieces: the four patch flavours, label/field selectors, schema translation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kube_emulator.errors import ApiError
from kube_emulator.patch import (
    PatchError,
    apply_patch,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from kube_emulator.schema import StructuralSchema, translate
from kube_emulator.selectors import FieldSelector, LabelSelector

# ------------------------------------------------------------------------------------ merge patch


def test_merge_patch_follows_rfc7386_examples() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "list": [3], "new": {"x": 1}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "list": [3], "new": {"x": 1}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}, "the input must not be mutated"
    assert merge_patch({"a": 1}, ["x"]) == ["x"]
    assert merge_patch("text", {"a": None, "b": 1}) == {"b": 1}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    target=st.dictionaries(st.text(max_size=3), json_values, max_size=4),
    patch=st.dictionaries(st.text(max_size=3), json_values, max_size=4),
)
def test_merge_patch_is_idempotent(target: dict[str, Any], patch: dict[str, Any]) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


# ------------------------------------------------------------------------------------- JSON patch


def test_json_patch_supports_all_operations() -> None:
    doc = {"metadata": {"resourceVersion": "7", "finalizers": ["a"]}, "spec": {"x": 1, "items": [1, 2, 3]}}
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
        {"op": "replace", "path": "/spec/x", "value": 2},
        {"op": "remove", "path": "/spec/items/0"},
        {"op": "copy", "from": "/spec/x", "path": "/spec/y"},
        {"op": "move", "from": "/spec/y", "path": "/spec/z"},
        {"op": "add", "path": "/spec/a~1b", "value": True},
    ]
    result = json_patch(doc, ops)
    assert result == {
        "metadata": {"resourceVersion": "7", "finalizers": ["a", "b"]},
        "spec": {"x": 2, "items": [2, 3], "z": 2, "a/b": True},
    }
    assert doc["spec"]["x"] == 1, "the input must not be mutated"


def test_json_patch_failing_test_is_flagged() -> None:
    with pytest.raises(PatchError) as caught:
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert caught.value.test_failed
    with pytest.raises(PatchError) as caught:
        json_patch({"a": 1}, [{"op": "replace", "path": "/missing", "value": 2}])
    assert not caught.value.test_failed
    with pytest.raises(PatchError):
        json_patch({"a": [1]}, [{"op": "add", "path": "/a/5", "value": 2}])


# -------------------------------------------------------------------------- strategic merge patch


def test_strategic_merge_patch_merges_named_lists_and_replaces_others() -> None:
    target = {
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "a:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "name": "http"}],
                },
                {"name": "side", "image": "s:1"},
            ],
            "volumes": [{"name": "v1", "emptyDir": {}}],
            "tolerations": [{"key": "x"}],
            "args": ["--a"],
        }
    }
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "a:2",
                    "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                    "ports": [{"containerPort": 81}],
                },
                {"name": "side", "$patch": "delete"},
                {"name": "new", "image": "n:1"},
            ],
            "tolerations": [{"key": "y"}],
            "args": ["--b"],
        }
    }
    result = strategic_merge_patch(target, patch)
    containers = {c["name"]: c for c in result["spec"]["containers"]}
    assert set(containers) == {"main", "new"}
    assert containers["main"]["image"] == "a:2"
    assert containers["main"]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert [p["containerPort"] for p in containers["main"]["ports"]] == [80, 81]
    assert result["spec"]["volumes"] == [{"name": "v1", "emptyDir": {}}], "untouched lists stay"
    assert result["spec"]["tolerations"] == [{"key": "y"}], "lists without a merge key are replaced"
    assert result["spec"]["args"] == ["--b"]


def test_strategic_merge_patch_directives_kubectl_generates() -> None:
    target = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [{"name": "a"}, {"name": "b"}],
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
        },
        "data": {"x": 1},
    }
    patch = {
        "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
        "spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "i"}],
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
        },
        "data": {"$patch": "replace", "y": 2},
    }
    result = strategic_merge_patch(target, patch)
    assert result["metadata"]["finalizers"] == ["b"]
    assert [c["name"] for c in result["spec"]["containers"]] == ["b", "a"]
    assert result["spec"]["containers"][1] == {"name": "a", "image": "i"}
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    assert result["data"] == {"y": 2}


def test_apply_patch_merges_the_applied_configuration() -> None:
    assert apply_patch({"spec": {"a": 1, "b": 2}}, {"spec": {"b": 3}}) == {"spec": {"a": 1, "b": 3}}
    assert apply_patch(None, {"spec": {"b": 3}}) == {"spec": {"b": 3}}


# ---------------------------------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("selector", "matching"),
    [
        ("app=web", {"web-canary", "web-stable"}),
        ("app==web,track=canary", {"web-canary"}),
        ("track!=canary", {"web-stable", "db", "bare"}),
        ("track in (canary, stable)", {"web-canary", "web-stable"}),
        ("track notin (canary)", {"web-stable", "db", "bare"}),
        ("track", {"web-canary", "web-stable"}),
        ("!track", {"db", "bare"}),
        ("app in (web,db),!track", {"db"}),
        ("tier>2", {"db"}),
        ("", {"web-canary", "web-stable", "db", "bare"}),
    ],
)
def test_label_selector_operators(selector: str, matching: set[str]) -> None:
    objects = {
        "web-canary": {"app": "web", "track": "canary"},
        "web-stable": {"app": "web", "track": "stable"},
        "db": {"app": "db", "tier": "3"},
        "bare": {},
    }
    parsed = LabelSelector.parse(selector)
    assert {name for name, labels in objects.items() if parsed.matches(labels)} == matching


def test_label_selector_rejects_garbage_and_round_trips() -> None:
    with pytest.raises(ApiError) as caught:
        LabelSelector.parse("app in web")
    assert caught.value.code == 400
    with pytest.raises(ApiError):
        LabelSelector.parse("app=bad value!")
    text = "app=web,track in (a,b),!gone,tier"
    assert LabelSelector.parse(str(LabelSelector.parse(text))) == LabelSelector.parse(text)
    spec = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["x"]}],
    }
    assert LabelSelector.from_spec(spec).matches({"app": "web", "track": "y"})
    assert not LabelSelector.from_spec(spec).matches({"app": "web", "track": "x"})


def test_field_selector() -> None:
    obj = {"metadata": {"name": "a", "namespace": "ns1"}, "status": {"phase": "Running", "ready": True}}
    assert FieldSelector.parse("metadata.name=a,metadata.namespace==ns1").matches(obj)
    assert not FieldSelector.parse("metadata.name!=a").matches(obj)
    assert FieldSelector.parse("status.phase=Running,status.ready=true").matches(obj)
    assert FieldSelector.parse("metadata.name=a").exact_name() == "a"


# --------------------------------------------------------------------------------------- schemas


def test_schema_translation_of_kubernetes_extensions() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "nullable": True, "enum": ["x"]},
            "b": {"x-kubernetes-int-or-string": True},
            "c": {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
        },
    }
    out = translate(schema)
    assert out["properties"]["a"] == {"type": ["string", "null"], "enum": ["x", None]}
    assert out["properties"]["b"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert out["properties"]["c"] == {"type": "integer", "exclusiveMinimum": 0}


def test_schema_prunes_defaults_and_names_fields() -> None:
    schema = StructuralSchema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "keep": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        "map": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "mode": {"type": "string", "default": "fast"},
                        "steps": {"type": "array", "items": {"type": "integer", "maximum": 100}},
                    },
                }
            },
        }
    )
    obj: dict[str, Any] = {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "a"},
        "spec": {"keep": {"anything": 1}, "map": {"a": 1}, "bogus": 2, "steps": [5, 500]},
        "toplevel": 1,
    }
    pruned = schema.prune(obj)
    assert sorted(pruned) == ["spec.bogus", "toplevel"]
    assert obj["spec"] == {"keep": {"anything": 1}, "map": {"a": 1}, "mode": "fast", "steps": [5, 500]}
    causes = schema.validate(obj)
    assert [c.field for c in causes] == ["spec.steps[1]"]
    assert "less than or equal to 100" in causes[0].message

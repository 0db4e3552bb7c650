"""Pure helpers of the reconcile shell: status diffs, error messages naming fields, observations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mlcanary.models import ModelDeploymentSpec
from mlcanary.reconcile import format_validation_error, merge_diff, observe_revisions
from mlcanary.settings import Settings

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)
objects = st.dictionaries(st.text(max_size=4), json_values, max_size=5)


def apply_merge_patch(target, patch):
    """RFC 7386, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def strip_nulls(value):
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    return value


@given(objects, objects)
def test_merge_diff_turns_old_into_new(old, new) -> None:
    # Status objects never hold nulls (exclude_none), which is what merge patch can express.
    old, new = strip_nulls(old), strip_nulls(new)
    assert apply_merge_patch(old, merge_diff(old, new)) == new


def test_merge_diff_is_empty_when_nothing_changed() -> None:
    status = {"phase": "Healthy", "conditions": [{"type": "Ready"}], "analysis": {"failures": 0}}
    assert merge_diff(status, dict(status)) == {}


def test_validation_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        ModelDeploymentSpec.model_validate(
            {"model": {"name": "m", "version": "1.0.0", "uri": "file:///m"}, "rollout": {"steps": [50, 20]}}
        )
    text = format_validation_error(caught.value)
    assert text.startswith("spec.rollout.steps: ")
    assert "strictly increasing" in text


def test_validation_error_names_list_items() -> None:
    with pytest.raises(ValidationError) as caught:
        ModelDeploymentSpec.model_validate(
            {
                "model": {"name": "m", "version": "1.0.0", "uri": "file:///m"},
                "analysis": {
                    "metrics": [
                        {"name": "a", "builtin": "errorRate", "max": 1},
                        {"name": "b", "builtin": "nope", "max": 1},
                    ]
                },
            }
        )
    assert "spec.analysis.metrics[1].builtin" in format_validation_error(caught.value)


def deployment(
    name: str, uid: str, replicas: int, ready: int, generation: int = 1, observed: int = 1
) -> dict:
    return {
        "metadata": {"name": name, "generation": generation, "ownerReferences": [{"uid": uid}]},
        "spec": {"replicas": replicas},
        "status": {
            "readyReplicas": ready,
            "updatedReplicas": ready if observed == generation else 0,
            "observedGeneration": observed,
        },
    }


def test_observe_revisions_ignores_objects_not_owned() -> None:
    seen = observe_revisions([deployment("a", "me", 2, 2), deployment("b", "someone-else", 1, 1)], "me")
    assert list(seen) == ["a"]
    assert seen["a"].available


def test_observe_revisions_does_not_count_pods_of_an_older_template() -> None:
    seen = observe_revisions([deployment("a", "me", 2, 2, generation=3, observed=2)], "me")
    assert seen["a"].ready_replicas == 0
    assert not seen["a"].available


def test_a_custom_query_that_cannot_render_is_refused_naming_its_field() -> None:
    from mlcanary.reconcile import InvalidQueryError, check_query_templates

    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "version": "1.0.0", "uri": "file:///m"},
            "analysis": {
                "metrics": [
                    {"name": "ok", "query": 'sum(x{v="{{version}}"})', "max": 1},
                    {"name": "bad", "query": 'sum(x{v="{{version}})', "max": 1},
                ]
            },
        }
    )
    with pytest.raises(InvalidQueryError) as caught:
        check_query_templates(spec, Settings(prometheus_namespace_label="namespace"))
    assert str(caught.value).startswith("spec.analysis.metrics[1].query: ")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"model": {"name": "m", "version": "V2", "uri": "file:///m"}},
            "spec.model.version: 'V2' is not a semantic version such as 2.1.0 (what model bundles carry)",
        ),
        (
            {
                "model": {"name": "m", "version": "1.0.0", "uri": "file:///m"},
                "rollout": {"stepDuration": "99999999999h"},
            },
            "spec.rollout.stepDuration: '99999999999h' is not a duration such as 30s, 5m or 1h30m",
        ),
        (
            {
                "model": {"name": "m", "version": "1.0.0", "uri": "file:///m"},
                "rollout": {"stepDuration": "200h"},
            },
            "spec.rollout.stepDuration: 200h is outside 0s-168h",
        ),
        (
            {"model": {"name": "m", "version": "1.0.0", "uri": "file:///m"}, "rollout": {"steps": [5, 50]}},
            "spec.rollout.steps[0]: 5% cannot be served by the replicas router with serving.replicas 1",
        ),
    ],
)
def test_validation_errors_read_like_instructions(spec: dict, expected: str) -> None:
    """Pattern and model-level errors name the field and say what a valid value looks like (the
    message a user sees in SpecValid), never a regular expression."""
    with pytest.raises(ValidationError) as caught:
        ModelDeploymentSpec.model_validate(spec)
    assert format_validation_error(caught.value).startswith(expected)


@pytest.mark.parametrize("name", ["fraud.v2", "f" * 64, "1fraud"])
def test_read_spec_refuses_names_that_make_invalid_children(name: str) -> None:
    from mlcanary.reconcile import read_spec

    obj = {
        "metadata": {"name": name},
        "spec": {"model": {"name": "m", "version": "1.0.0", "uri": "file:///m"}},
    }
    spec, problem = read_spec(obj, Settings())
    assert spec is None and problem is not None and problem.startswith("metadata.name: ")

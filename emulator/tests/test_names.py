"""Names, labels and annotations are refused as a real API server refuses them: 422, the field, the message.

The expected messages are apimachinery's, word for word (k8s.io/apimachinery/pkg/util/validation).
"""

from __future__ import annotations

from typing import Any

from emulator_kit import CM, DEPLOYS, Http, configmap, deployment

SERVICES = "/api/v1/namespaces/default/services"
NAMESPACES = "/api/v1/namespaces"
CRONJOBS = "/apis/batch/v1/namespaces/default/cronjobs"
CLUSTERROLES = "/apis/rbac.authorization.k8s.io/v1/clusterroles"

DNS1035 = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def service(name: str, selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector or {"app": "x"}, "ports": [{"port": 80}]},
    }


def causes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in body["details"]["causes"]]


async def test_a_service_name_must_be_a_dns1035_label(http: Http) -> None:
    status, body = await http.post(SERVICES, service("1abc"))
    assert status == 422
    assert body["reason"] == "Invalid"
    assert body["message"] == f'Service "1abc" is invalid: metadata.name: Invalid value: "1abc": {DNS1035}'
    assert causes(body) == [("metadata.name", f'Invalid value: "1abc": {DNS1035}')]
    status, body = await http.post(SERVICES, service("a" * 64))
    assert status == 422
    assert ("metadata.name", f'Invalid value: "{"a" * 64}": must be no more than 63 characters') in causes(
        body
    )
    assert (await http.post(SERVICES, service("abc-1")))[0] == 201


async def test_namespaces_are_dns1123_labels_while_most_kinds_take_subdomains(http: Http) -> None:
    status, body = await http.post(NAMESPACES, {"metadata": {"name": "team.a"}})
    assert status == 422
    assert causes(body)[0][1].startswith('Invalid value: "team.a": a lowercase RFC 1123 label must consist')
    assert (await http.post(CM, configmap("team.a")))[0] == 201  # a subdomain is fine for a ConfigMap
    status, body = await http.post(CM, configmap("Team"))
    assert status == 422
    assert "a lowercase RFC 1123 subdomain must consist of" in causes(body)[0][1]


async def test_rbac_names_only_need_to_be_path_segments(http: Http) -> None:
    role = {"metadata": {"name": "system:mlcanary:viewer"}, "rules": []}
    assert (await http.post(CLUSTERROLES, role))[0] == 201
    status, body = await http.post(CLUSTERROLES, {"metadata": {"name": "a/b"}, "rules": []})
    assert (status, causes(body)) == (422, [("metadata.name", "Invalid value: \"a/b\": may not contain '/'")])


async def test_label_values_and_keys(http: Http) -> None:
    status, body = await http.post(CM, configmap("c1", labels={"app": "bad value"}))
    assert status == 422
    assert causes(body) == [("metadata.labels", f'Invalid value: "bad value": {LABEL_VALUE}')]
    status, body = await http.post(CM, configmap("c2", labels={"v": "x" * 64}))
    assert ("metadata.labels", f'Invalid value: "{"x" * 64}": must be no more than 63 characters') in causes(
        body
    )
    status, body = await http.post(CM, configmap("c3", labels={"Example.com/app": "x"}))
    assert status == 422
    assert causes(body)[0][1].startswith(
        'Invalid value: "Example.com/app": prefix part a lowercase RFC 1123 subdomain must consist of'
    )
    status, body = await http.post(CM, configmap("c4", labels={"a" * 64: "x"}))
    assert causes(body) == [
        ("metadata.labels", f'Invalid value: "{"a" * 64}": name part must be no more than 63 characters')
    ]
    ok = configmap("c5", labels={"app.kubernetes.io/name": "My_Value.1", "empty": ""})
    assert (await http.post(CM, ok))[0] == 201


async def test_annotations_may_total_256_kib(http: Http) -> None:
    big = configmap("big")
    big["metadata"]["annotations"] = {"a": "x" * (256 * 1024)}
    status, body = await http.post(CM, big)
    assert status == 422
    assert causes(body) == [("metadata.annotations", "Too long: may not be more than 262144 bytes")]
    big["metadata"]["annotations"] = {"a": "x" * (256 * 1024 - 1)}
    assert (await http.post(CM, big))[0] == 201


async def test_generate_name_is_checked_as_a_prefix_and_cut_to_fit(http: Http) -> None:
    created = await http.ok("POST", CM, {"metadata": {"generateName": "x" * 70 + "-"}})
    name = created["metadata"]["name"]
    assert len(name) == 63 and name.startswith("x" * 58)
    status, body = await http.post(CM, {"metadata": {"generateName": "web."}})
    assert status == 422
    assert causes(body)[0][0] == "metadata.generateName"
    assert causes(body)[0][1].startswith('Invalid value: "web.": a lowercase RFC 1123 subdomain')


async def test_labels_inside_templates_and_selectors(http: Http) -> None:
    bad_template = deployment("web")
    bad_template["spec"]["template"]["metadata"]["labels"]["version"] = "1.0/beta"
    status, body = await http.post(DEPLOYS, bad_template)
    assert status == 422
    assert ("spec.template.metadata.labels", f'Invalid value: "1.0/beta": {LABEL_VALUE}') in causes(body)
    bad_selector = deployment("web2")
    bad_selector["spec"]["selector"]["matchExpressions"] = [{"key": "tier", "operator": "In", "values": []}]
    status, body = await http.post(DEPLOYS, bad_selector)
    assert status == 422
    assert causes(body)[0] == (
        "spec.selector.matchExpressions[0].values",
        "Required value: must be specified when `operator` is 'In' or 'NotIn'",
    )
    status, body = await http.post(SERVICES, service("svc", selector={"app": "-x"}))
    assert (status, causes(body)) == (422, [("spec.selector", f'Invalid value: "-x": {LABEL_VALUE}')])


async def test_cronjob_names_leave_room_for_their_jobs(http: Http) -> None:
    job_template = {
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}
        }
    }
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "c" * 53},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": job_template},
    }
    status, body = await http.post(CRONJOBS, cronjob)
    assert status == 422
    assert ("metadata.name", f'Invalid value: "{"c" * 53}": must be no more than 52 characters') in causes(
        body
    )

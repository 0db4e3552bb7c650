"""Jobs, CronJobs and HorizontalPodAutoscalers: what the real server defaults and refuses, and what its
controllers write (Jobs simulated by annotation; CronJobs on schedule on the emulator's clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from emulator_kit import DEPLOYS, Http, deployment, wait_for

from kube_emulator import KubernetesEmulator

JOBS = "/apis/batch/v1/namespaces/default/jobs"
CRONJOBS = "/apis/batch/v1/namespaces/default/cronjobs"
HPAS = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"


def job(name: str, outcome: str | None = None, **spec: Any) -> dict[str, Any]:
    annotations = {"emulator.mlcanary.io/job-outcome": outcome} if outcome else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
                }
            },
            **spec,
        },
    }


def cronjob(name: str, schedule: str, **spec: Any) -> dict[str, Any]:
    template = job("x")["spec"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {"metadata": {"labels": {"app": name}}, "spec": template},
            **spec,
        },
    }


def condition_types(obj: dict[str, Any]) -> list[str]:
    return [c["type"] for c in (obj.get("status") or {}).get("conditions") or [] if c["status"] == "True"]


def causes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in body["details"]["causes"]]


async def test_job_defaults_generated_selector_and_labels(http: Http) -> None:
    created = await http.ok("POST", JOBS, job("train"))
    spec, uid = created["spec"], created["metadata"]["uid"]
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (1, 1, 6)
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = spec["template"]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/job-name"] == "train" and labels["controller-uid"] == uid
    status, body = await http.patch(
        f"{JOBS}/train", {"spec": {"template": {"spec": {"restartPolicy": "OnFailure"}}}}
    )
    assert (status, causes(body)) == (422, [("spec.template", "Invalid value: field is immutable")])


async def test_job_refusals(http: Http) -> None:
    always = job("always")
    always["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    status, body = await http.post(JOBS, always)
    assert (status, causes(body)) == (
        422,
        [
            (
                "spec.template.spec.restartPolicy",
                'Unsupported value: "Always": supported values: "OnFailure", "Never"',
            )
        ],
    )
    # A 64-character Job name is a valid object name, but its pods' job-name label is not.
    status, body = await http.post(JOBS, job("j" * 64))
    assert status == 422
    assert (
        "spec.template.metadata.labels",
        f'Invalid value: "{"j" * 64}": must be no more than 63 characters',
    ) in causes(body)


async def test_simulated_jobs_complete_fail_or_exceed_their_deadline(
    emu: KubernetesEmulator, http: Http
) -> None:
    await http.ok("POST", JOBS, job("ok"))
    await http.ok("POST", JOBS, job("bad", "fail", backoffLimit=2))
    await http.ok("POST", JOBS, job("slow", "never", activeDeadlineSeconds=30))
    done = await wait_for(lambda: "Complete" in condition_types(emu.get_object("jobs", "ok") or {}))
    assert done
    ok = emu.get_object("jobs", "ok")
    assert ok is not None
    assert (ok["status"]["succeeded"], ok["status"]["active"]) == (1, 0)
    assert ok["status"]["completionTime"] and ok["status"]["startTime"]
    assert condition_types(ok) == ["SuccessCriteriaMet", "Complete"]
    await wait_for(lambda: "Failed" in condition_types(emu.get_object("jobs", "bad") or {}))
    bad = emu.get_object("jobs", "bad")
    assert bad is not None and bad["status"]["failed"] == 3
    assert bad["status"]["conditions"][-1]["reason"] == "BackoffLimitExceeded"
    slow = await wait_for(lambda: (emu.get_object("jobs", "slow") or {}).get("status", {}).get("active") == 1)
    slow = emu.get_object("jobs", "slow")
    assert slow is not None and not condition_types(slow)
    emu.advance_clock(31)
    await wait_for(lambda: "Failed" in condition_types(emu.get_object("jobs", "slow") or {}))
    slow = emu.get_object("jobs", "slow")
    assert slow is not None and slow["status"]["conditions"][-1]["reason"] == "DeadlineExceeded"


async def test_finished_jobs_go_after_their_ttl(emu: KubernetesEmulator, http: Http) -> None:
    await http.ok("POST", JOBS, job("short", ttlSecondsAfterFinished=60))
    await wait_for(lambda: "Complete" in condition_types(emu.get_object("jobs", "short") or {}))
    emu.advance_clock(30)
    await http.ok("GET", f"{JOBS}/short")  # not yet
    emu.advance_clock(31)
    await wait_for(lambda: emu.get_object("jobs", "short") is None)


async def test_cronjob_creates_owned_jobs_on_schedule_and_keeps_history(
    emu: KubernetesEmulator, http: Http
) -> None:
    created = await http.ok("POST", CRONJOBS, cronjob("nightly", "*/5 * * * *", successfulJobsHistoryLimit=2))
    assert created["spec"]["concurrencyPolicy"] == "Allow" and created["spec"]["failedJobsHistoryLimit"] == 1
    await http.ok("GET", CRONJOBS)
    assert emu.objects("jobs") == []
    for round_ in range(1, 5):
        emu.advance_clock(5 * 60)
        await wait_for(
            lambda r=round_: (
                len([j for j in emu.objects("jobs") if j["metadata"]["name"].startswith("nightly-")])
                >= min(r, 2)
                and all("Complete" in condition_types(j) for j in emu.objects("jobs"))
            ),
            within=10,
        )
    jobs = emu.objects("jobs")
    assert len(jobs) == 2  # successfulJobsHistoryLimit
    first = jobs[0]
    owner = first["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("CronJob", "nightly", True)
    scheduled = first["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    minute = datetime.strptime(scheduled, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert minute.minute % 5 == 0 and first["metadata"]["name"] == f"nightly-{int(minute.timestamp() // 60)}"
    assert first["metadata"]["labels"]["app"] == "nightly"
    status = await wait_for(
        lambda: (emu.get_object("cronjobs", "nightly") or {}).get("status", {}).get("lastSuccessfulTime")
    )
    assert status
    assert (emu.get_object("cronjobs", "nightly") or {})["status"]["lastScheduleTime"]
    await http.ok("DELETE", f"{CRONJOBS}/nightly")
    await wait_for(lambda: emu.objects("jobs") == [])  # owned: collected with the CronJob


async def test_cronjob_time_zone_and_refusals(emu: KubernetesEmulator, http: Http) -> None:
    status, body = await http.post(CRONJOBS, cronjob("c1", "every day"))
    assert (status, causes(body)) == (
        422,
        [("spec.schedule", 'Invalid value: "every day": unparseable cron schedule')],
    )
    status, body = await http.post(CRONJOBS, cronjob("c2", "0 9 * * *", timeZone="Mars/Olympus"))
    assert causes(body) == [
        ("spec.timeZone", 'Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus')
    ]
    await http.ok("POST", CRONJOBS, cronjob("paris", "0 9 * * *", timeZone="Europe/Paris"))
    emu.advance_clock(25 * 3600)
    await wait_for(lambda: emu.objects("jobs"), within=10)
    scheduled = emu.objects("jobs")[0]["metadata"]["annotations"][
        "batch.kubernetes.io/cronjob-scheduled-timestamp"
    ]
    assert scheduled.endswith(("T08:00:00Z", "T07:00:00Z"))  # 09:00 in Paris, winter or summer time


async def test_hpa_is_validated_and_gets_a_minimal_status(emu: KubernetesEmulator, http: Http) -> None:
    def hpa(name: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                **spec,
            },
        }

    _, body = await http.post(HPAS, hpa("a", minReplicas=0, maxReplicas=3))
    assert ("spec.minReplicas", "Invalid value: 0: must be greater than or equal to 1") in causes(body)
    _, body = await http.post(HPAS, hpa("b", minReplicas=4, maxReplicas=2))
    assert causes(body) == [
        ("spec.maxReplicas", "Invalid value: 2: must be greater than or equal to `minReplicas`")
    ]
    await http.ok("POST", DEPLOYS, deployment("web", replicas=1))
    created = await http.ok("POST", HPAS, hpa("web", minReplicas=2, maxReplicas=5))
    assert created["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    got = await wait_for(lambda: (emu.get_object("horizontalpodautoscalers", "web") or {}).get("status"))
    assert (got["currentReplicas"], got["desiredReplicas"]) == (1, 2)
    assert [c["type"] for c in got["conditions"]] == ["AbleToScale", "ScalingActive"]

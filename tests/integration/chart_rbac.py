"""The operator runs as a ServiceAccount bound by exactly the Helm chart's rendered RBAC.

``helm template charts/mlcanary`` renders the ServiceAccount, the (Cluster)Roles and their bindings; the
emulator (which authorizes by RBAC, as a real API server) gets exactly those objects, and the operator a
token of that ServiceAccount. A verb the chart lacks fails the operator's requests with 403; a verb it
grants but the operator never uses shows in :func:`granted_but_unused` (from the emulator's request
accounting).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kube_emulator import EmulatorThread

from .harness import REPO, Cluster

CHART = REPO / "charts" / "mlcanary"
OPERATOR_NAMESPACE = "mlcanary-system"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
NAMESPACED_KINDS = ("ServiceAccount", "Role", "RoleBinding")


def _helm() -> str:
    local = REPO / ".venv" / "bin" / "helm"
    found = str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which("helm")
    if found is None:
        raise RuntimeError("helm is needed to render the chart's RBAC (make setup installs it)")
    return found


@functools.cache
def _render(release: str, watch_namespaces: tuple[str, ...], sets: tuple[str, ...]) -> str:
    args = [_helm(), "template", release, str(CHART), "--namespace", OPERATOR_NAMESPACE]
    if watch_namespaces:
        args += ["--set", "watchNamespaces={" + ",".join(watch_namespaces) + "}"]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{result.stderr}")
    return result.stdout


def chart_rbac(
    release: str, watch_namespaces: Sequence[str] = (), sets: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], str]:
    """The chart's RBAC objects as rendered (fresh copies), and the operator's ``namespace/name``."""
    objects = [
        doc for doc in yaml.safe_load_all(_render(release, tuple(watch_namespaces), tuple(sets))) if doc
    ]
    rbac = [o for o in objects if o.get("kind") in RBAC_KINDS]
    for obj in rbac:
        if obj["kind"] in NAMESPACED_KINDS:
            obj["metadata"].setdefault("namespace", OPERATOR_NAMESPACE)
    deployment = next(o for o in objects if o.get("kind") == "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    return rbac, f"{OPERATOR_NAMESPACE}/{account}"


def install(emu: EmulatorThread, objects: Iterable[Mapping[str, Any]]) -> None:
    """Create the objects as the admin (what `helm install` by a cluster admin does)."""
    namespaces = {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
    for namespace in sorted(namespaces):
        emu.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for obj in objects:
        emu.apply(dict(obj))


def service_account_kubeconfig(emu: EmulatorThread, account: str, path: Path) -> Path:
    namespace, _, name = account.partition("/")
    return emu.write_kubeconfig(path, token=emu.service_account_token(namespace, name, create=False))


def granted(objects: Iterable[Mapping[str, Any]], account: str) -> set[tuple[str, str, str]]:
    """(verb, group, resource) triples the objects grant the ServiceAccount ``namespace/name``
    (wildcards are not expanded: the chart uses none)."""
    namespace, _, name = account.partition("/")
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}
    out: set[tuple[str, str, str]] = set()
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = binding.get("subjects") or []
        if not any(
            s.get("kind") == "ServiceAccount" and s.get("name") == name and s.get("namespace") == namespace
            for s in subjects
        ):
            continue
        ref = binding["roleRef"]
        scope = "" if ref["kind"] == "ClusterRole" else binding["metadata"].get("namespace", "")
        for rule in roles[(ref["kind"], scope, ref["name"])].get("rules") or []:
            for verb in rule.get("verbs") or []:
                for group in rule.get("apiGroups") or []:
                    for resource in rule.get("resources") or []:
                        out.add((verb, group, resource))
    return out


def granted_but_unused(
    objects: Iterable[Mapping[str, Any]], account: str, used: set[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    return granted(list(objects), account) - used


def service_account_user(account: str) -> str:
    namespace, _, name = account.partition("/")
    return f"system:serviceaccount:{namespace}:{name}"


class RbacCluster(Cluster):
    """A :class:`Cluster` whose ``kubeconfig`` is the operator's: a ServiceAccount bound by the chart's
    cluster-wide RBAC. ``admin_kubeconfig`` is for what a cluster admin does (kubectl apply of a chart)."""

    def __init__(self, emulator: EmulatorThread, workdir: Path, metrics_file: Path) -> None:
        self.workdir = workdir
        self.admin_kubeconfig = emulator.write_kubeconfig(workdir / "admin.kubeconfig")
        super().__init__(emulator, self.admin_kubeconfig, metrics_file)
        self.kubeconfig = self.operator_kubeconfig()

    def operator_kubeconfig(
        self, watch_namespaces: Sequence[str] = (), sets: Sequence[str] = (), release: str | None = None
    ) -> Path:
        """Install the chart's RBAC for these values (each mode under its own release, so its own
        ServiceAccount) and return a kubeconfig with that ServiceAccount's token."""
        release = release or ("itns" if watch_namespaces else "it")
        objects, account = chart_rbac(release, watch_namespaces, sets)
        install(self.emu, objects)
        return service_account_kubeconfig(self.emu, account, self.workdir / f"{release}.kubeconfig")

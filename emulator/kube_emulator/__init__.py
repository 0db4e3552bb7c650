"""An in-memory Kubernetes API server over real HTTP, for operators, the official client and kubectl.

Independent of mlcanary: it imports neither the operator nor the serving package. See README.md beside
this package and ``docs/emulator.md``.
"""

from kube_emulator.deployments import ReadinessRule
from kube_emulator.server import EmulatorThread, KubernetesEmulator, load_manifests, main, write_kubeconfig

__all__ = [
    "EmulatorThread",
    "KubernetesEmulator",
    "ReadinessRule",
    "load_manifests",
    "main",
    "write_kubeconfig",
]

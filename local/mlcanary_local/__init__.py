"""The local stack: mlcanary on one machine, no cluster.

The API emulator (:mod:`kube_emulator`), serving pods as local processes (:mod:`mlcanary_local.kubelet`),
a weighted local gateway, a real Prometheus and the real operator; :mod:`mlcanary_local.demo` tells a
canary story on it. Installed with the ``local`` extra; ``mlcanary local`` and ``mlcanary demo`` reach it
through the ``mlcanary.commands`` entry points (:mod:`mlcanary_local.cli`).
"""

"""Where the API server is and how to authenticate: in-cluster service account or a kubeconfig.

Loading is delegated to the official ``kubernetes`` package (it knows every kubeconfig flavour: token,
client certificates, exec plugins, in-cluster token rotation); this module turns its configuration
into what an aiohttp session needs. The ``KUBECONFIG`` variable is read at call time (the official
package reads it once, at import).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config


@dataclass
class Connection:
    """An API server address with its TLS settings and credentials."""

    server: str
    ssl_context: ssl.SSLContext | bool = True
    configuration: k8s_client.Configuration | None = None
    static_token: str | None = None

    def authorization(self) -> str | None:
        """The Authorization header value, refreshed when the token source rotates it."""
        if self.static_token:
            return f"Bearer {self.static_token}"
        cfg = self.configuration
        if cfg is None:
            return None
        token = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
        if token:
            return token if " " in token else f"Bearer {token}"
        if cfg.username and cfg.password:
            basic: str | None = cfg.get_basic_auth_token()
            return basic
        return None

    @classmethod
    def plain(cls, server: str, token: str | None = None) -> Connection:
        """An explicit server URL and bearer token (tests, the local stack)."""
        return cls(server=server.rstrip("/"), ssl_context=True, static_token=token)


def _ssl_context(cfg: k8s_client.Configuration) -> ssl.SSLContext | bool:
    if not cfg.host.startswith("https://"):
        return True  # plain HTTP (a local emulator): no TLS
    if not cfg.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return context


def load_connection(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """In-cluster credentials when running in a pod, else the kubeconfig (``KUBECONFIG`` or
    ``~/.kube/config``, or ``kubeconfig`` when given)."""
    cfg = k8s_client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=cfg
        )
    return Connection(server=cfg.host.rstrip("/"), ssl_context=_ssl_context(cfg), configuration=cfg)

"""Authentication by bearer token and RBAC authorization, as a real API server with ``--authorization-mode=RBAC``.

* Tokens: an admin token (group ``system:masters``, which bypasses authorization, as on a real server)
  is minted at start; ServiceAccount tokens come from the TokenRequest API
  (``POST .../serviceaccounts/NAME/token``) or :meth:`Authenticator.service_account_token`, and stop
  working when the ServiceAccount is deleted. No token: ``system:anonymous``. An unknown token: 401.
* Authorization: the stored Roles, ClusterRoles, RoleBindings and ClusterRoleBindings (subjects
  ServiceAccount, User, Group; ``resourceNames``; ``nonResourceURLs``; no aggregation). Decisions are
  cached per (user, request attributes) and the cache is dropped whenever an RBAC object changes.
* Bootstrap roles as on a real cluster: ``cluster-admin`` for ``system:masters``, ``system:discovery``
  and ``system:basic-user`` for every authenticated user, ``system:public-info-viewer`` for everyone.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kube_emulator.errors import ApiError, group_resource

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_KINDS = ("roles", "rolebindings", "clusterroles", "clusterrolebindings")
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
SA_PREFIX = "system:serviceaccount:"


class User(NamedTuple):  # a tuple: cheap to make and to hash (a decision cache key on every request)
    name: str
    groups: tuple[str, ...] = ()
    # For ServiceAccount tokens: the account's uid when the token was issued (deleted account: invalid).
    service_account_uid: str | None = None
    # (namespace, name) of a ServiceAccount user, set by service_account_user().
    service_account: tuple[str, str] | None = None

    @property
    def is_admin(self) -> bool:
        return MASTERS in self.groups


ADMIN = User("kubernetes-admin", (MASTERS, AUTHENTICATED))
ANONYMOUS = User("system:anonymous", (UNAUTHENTICATED,))


def service_account_user(namespace: str, name: str, uid: str | None = None) -> User:
    return User(
        f"{SA_PREFIX}{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
        uid,
        (namespace, name),
    )


class Request(NamedTuple):
    """What authorization looks at (a real server's ``authorizer.Attributes``)."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # for non-resource requests (``/version``, ``/apis`` ...)

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(user: User, request: Request) -> ApiError:
    """403 with the real message, e.g. ``deployments.apps is forbidden: User "x" cannot list resource
    "deployments" in API group "apps" in the namespace "ns"``."""
    who = f'User "{user.name}"'
    if not request.is_resource:
        return ApiError(
            403,
            "Forbidden",
            f'forbidden: {who} cannot {request.verb} path "{request.path}"',
            details={},
        )
    resource = request.resource + (f"/{request.subresource}" if request.subresource else "")
    target = group_resource(request.group, request.resource)
    if request.name:
        target += f' "{request.name}"'
    scope = f'in the namespace "{request.namespace}"' if request.namespace else "at the cluster scope"
    details: dict[str, Any] = {"kind": request.resource}
    if request.name:
        details["name"] = request.name
    if request.group:
        details["group"] = request.group
    return ApiError(
        403,
        "Forbidden",
        f'{target} is forbidden: {who} cannot {request.verb} resource "{resource}" in API group '
        f'"{request.group}" {scope}',
        details=details,
    )


class Authenticator:
    """Bearer tokens → users. The admin token exists from the start."""

    def __init__(self) -> None:
        self.admin_token = secrets.token_urlsafe(24)
        self._tokens: dict[str, User] = {self.admin_token: ADMIN}

    def add(self, user: User) -> str:
        token = secrets.token_urlsafe(24)
        self._tokens[token] = user
        return token

    def forget_service_account(self, uid: str) -> None:
        """The ServiceAccount with this uid is gone: its tokens stop working (as bound tokens do)."""
        for token in [t for t, u in self._tokens.items() if u.service_account_uid == uid]:
            del self._tokens[token]

    def user_for(self, authorization: str | None) -> User | None:
        """The user of an ``Authorization`` header; ANONYMOUS without one; None for a bad token."""
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self._tokens.get(token.strip())


@dataclass(slots=True)
class _Grants:
    """The rules one user holds: cluster-wide, and per namespace (from RoleBindings)."""

    cluster: list[Mapping[str, Any]] = field(default_factory=list)
    namespaced: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    names_matter: bool = False  # some rule has resourceNames


def _subject_matches(subject: Mapping[str, Any], user: User) -> bool:
    kind = subject.get("kind")
    name = subject.get("name")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        if not user.name.startswith(SA_PREFIX):
            return False
        namespace, _, account = user.name[len(SA_PREFIX) :].partition(":")
        return (namespace, account) == (subject.get("namespace") or "", name)
    return False


def _matches(values: Iterable[Any] | None, value: str) -> bool:
    items = list(values or ())
    return "*" in items or value in items


def _resource_matches(resources: Iterable[Any] | None, resource: str, subresource: str) -> bool:
    items = list(resources or ())
    if "*" in items:
        return True
    if not subresource:
        return resource in items
    return f"{resource}/{subresource}" in items or f"*/{subresource}" in items


def _url_matches(urls: Iterable[Any] | None, path: str) -> bool:
    for url in urls or ():
        text = str(url)
        if text == "*" or text == path or (text.endswith("*") and path.startswith(text[:-1])):
            return True
    return False


def rule_allows(rule: Mapping[str, Any], request: Request) -> bool:
    if not _matches(rule.get("verbs"), request.verb):
        return False
    if not request.is_resource:
        return _url_matches(rule.get("nonResourceURLs"), request.path)
    if not _matches(rule.get("apiGroups"), request.group):
        return False
    if not _resource_matches(rule.get("resources"), request.resource, request.subresource):
        return False
    names = rule.get("resourceNames")
    return not names or (bool(request.name) and request.name in names)


# What every real cluster has (pkg/registry/rbac/... bootstrappolicy), reduced to what clients need.
_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                   "/readyz", "/version", "/version/"]  # fmt: skip
BOOTSTRAP_ROLES: list[tuple[str, list[dict[str, Any]], list[dict[str, str]]]] = [
    (
        "cluster-admin",
        [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
        [{"kind": "Group", "apiGroup": RBAC_GROUP, "name": MASTERS}],
    ),
    (
        "system:discovery",
        [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}],
        [{"kind": "Group", "apiGroup": RBAC_GROUP, "name": AUTHENTICATED}],
    ),
    (
        "system:public-info-viewer",
        [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}],
        [
            {"kind": "Group", "apiGroup": RBAC_GROUP, "name": AUTHENTICATED},
            {"kind": "Group", "apiGroup": RBAC_GROUP, "name": UNAUTHENTICATED},
        ],
    ),
    (
        "system:basic-user",
        [
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"],
            },
        ],
        [{"kind": "Group", "apiGroup": RBAC_GROUP, "name": AUTHENTICATED}],
    ),
]


def bootstrap_objects() -> list[dict[str, Any]]:
    """ClusterRoles and ClusterRoleBindings of :data:`BOOTSTRAP_ROLES`."""
    labels = {"kubernetes.io/bootstrapping": "rbac-defaults"}
    objects: list[dict[str, Any]] = []
    for name, rules, subjects in BOOTSTRAP_ROLES:
        objects.append(
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name, "labels": labels},
                "rules": rules,
            }
        )
        objects.append(
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name, "labels": labels},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
                "subjects": subjects,
            }
        )
    return objects


class Authorizer:
    """RBAC over the objects of a store (anything with ``iter_objects(key)``)."""

    CACHE_LIMIT = 50_000

    def __init__(self, objects: Any) -> None:
        self._objects = objects
        self._grants: dict[User, _Grants] = {}
        self._decisions: dict[tuple[User, Request], bool] = {}
        self.evaluations = 0  # decisions computed (not served from the cache): for tests and benchmarks

    def invalidate(self) -> None:
        """Forget every cached decision (an RBAC object changed)."""
        self._grants.clear()
        self._decisions.clear()

    def allowed(self, user: User, request: Request) -> bool:
        if user.is_admin:
            return True
        # Decided per (user, verb, group, resource, subresource, namespace), whatever the object's name:
        # only a rule with resourceNames can allow one name and not another, so the name is looked at
        # only when the name-blind answer is no and such a rule applies.
        nameless = request._replace(name="") if request.name else request
        decision = self._cached(user, nameless)
        if decision or not request.name or not self._grants_of(user).names_matter:
            return decision
        return self._cached(user, request)

    def _cached(self, user: User, request: Request) -> bool:
        key = (user, request)
        decision = self._decisions.get(key)
        if decision is None:
            self.evaluations += 1
            decision = self._decide(user, request)
            if len(self._decisions) >= self.CACHE_LIMIT:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def rules_for(self, user: User, namespace: str = "") -> list[Mapping[str, Any]]:
        """The rules that apply to ``user`` in ``namespace`` ('' = cluster scope only)."""
        grants = self._grants_of(user)
        return [*grants.cluster, *(grants.namespaced.get(namespace, []) if namespace else [])]

    def _decide(self, user: User, request: Request) -> bool:
        return any(rule_allows(rule, request) for rule in self.rules_for(user, request.namespace))

    def _grants_of(self, user: User) -> _Grants:
        grants = self._grants.get(user)
        if grants is not None:
            return grants
        grants = _Grants()
        cluster_roles = {
            o["metadata"]["name"]: o.get("rules") or []
            for o in self._objects.iter_objects((RBAC_GROUP, "clusterroles"))
        }
        roles = {
            (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o.get("rules") or []
            for o in self._objects.iter_objects((RBAC_GROUP, "roles"))
        }
        for binding in self._objects.iter_objects((RBAC_GROUP, "clusterrolebindings")):
            if any(_subject_matches(s, user) for s in binding.get("subjects") or []):
                ref = binding.get("roleRef") or {}
                if ref.get("kind") == "ClusterRole":
                    grants.cluster.extend(cluster_roles.get(ref.get("name"), []))
        for binding in self._objects.iter_objects((RBAC_GROUP, "rolebindings")):
            if not any(_subject_matches(s, user) for s in binding.get("subjects") or []):
                continue
            namespace = binding["metadata"].get("namespace", "")
            ref = binding.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole":
                rules = cluster_roles.get(ref.get("name"), [])
            else:
                rules = roles.get((namespace, ref.get("name")), [])
            grants.namespaced.setdefault(namespace, []).extend(rules)
        rules = [*grants.cluster, *(r for rs in grants.namespaced.values() for r in rs)]
        grants.names_matter = any(rule.get("resourceNames") for rule in rules)
        self._grants[user] = grants
        return grants

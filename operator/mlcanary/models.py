"""The ModelDeployment API: pydantic models for spec and status.

This module is the one schema source: the CRD in ``crds/`` is generated from these classes by
:mod:`mlcanary.crd`, so every field's description here is what ``kubectl explain`` shows. Rules the
OpenAPI schema cannot express (strictly increasing steps, exactly one router, ...) are validators
here; the operator runs them and reports the failing field in a condition.

Pure: imports nothing that performs I/O.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import re
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from mlcanary import weights
from mlcanary.durations import DURATION_PATTERN, parse_duration

API_GROUP = "mlcanary.io"
API_VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]
CATEGORIES = ["mlcanary", "all"]


# Gateway API value formats (mirrored from the upstream v1.6.1 CRD so a bad value is reported on the
# ModelDeployment's SpecValid condition instead of as an API error on every tick).
GATEWAY_DURATION_PATTERN = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HTTP_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$")
WEIGHTED_RULE = "weighted"
MIRROR_RULE = "shadow-mirror"  # the shadow phase's route (Istio names its routes)
MAX_HTTPROUTE_RULES = 16  # Gateway API v1.6.1: spec.rules maxItems


def _duration_within(minimum: str, maximum: str) -> Any:
    low, high = parse_duration(minimum), parse_duration(maximum)

    def check(value: str) -> str:
        if not low <= parse_duration(value) <= high:
            raise ValueError(f"{value} is outside {minimum}-{maximum}")
        return value

    return check


def _duration_field(maximum: str, minimum: str) -> Any:
    rule = f"duration(self) <= duration('{maximum}')"
    if parse_duration(minimum).total_seconds() > 0:
        rule = f"duration(self) >= duration('{minimum}') && {rule}"
    return Field(
        pattern=DURATION_PATTERN,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": rule, "message": f"must be between {minimum} and {maximum}"}
            ]
        },
    )


# Bounds of what users can write: large enough for any real rollout, small enough that no arithmetic
# on them overflows and no object becomes uncontrollable.
MAX_STEP_DURATION = "168h"  # a week at one step
MAX_DEADLINE = "24h"
MAX_SCALE_DOWN_DELAY = "24h"
MAX_INTERVAL = "24h"
MAX_QUERY_TIMEOUT = "5m"
MAX_SETTLE_TIME = "10m"
MAX_REQUEST_TIMEOUT = "24h"
MAX_LOAD_TEST_DURATION = "1h"
MAX_LOAD_TEST_WARMUP = "10m"
MAX_LOAD_TEST_REQUEST_TIMEOUT = "60s"
MAX_LOAD_TEST_RPS = 10_000.0
MAX_LOAD_TEST_CONCURRENCY = 1000
MAX_JOB_TEMPLATE_BYTES = 64 * 1024
LIMIT = 1_000_000_000_000_000.0  # |min|, |max|, tolerances: far beyond any metric, always finite

# A Go-style duration string between a minimum and a maximum: checked by the model (the operator names
# the field in SpecValid) and by the CRD (pattern, length and a CEL rule, so a real API server refuses
# it at apply time).
StepDuration = Annotated[
    str, _duration_field(MAX_STEP_DURATION, "0s"), AfterValidator(_duration_within("0s", MAX_STEP_DURATION))
]
Deadline = Annotated[
    str, _duration_field(MAX_DEADLINE, "1s"), AfterValidator(_duration_within("1s", MAX_DEADLINE))
]
ScaleDownDelay = Annotated[
    str,
    _duration_field(MAX_SCALE_DOWN_DELAY, "0s"),
    AfterValidator(_duration_within("0s", MAX_SCALE_DOWN_DELAY)),
]
AnalysisInterval = Annotated[
    str, _duration_field(MAX_INTERVAL, "1s"), AfterValidator(_duration_within("1s", MAX_INTERVAL))
]
QueryTimeout = Annotated[
    str,
    _duration_field(MAX_QUERY_TIMEOUT, "100ms"),
    AfterValidator(_duration_within("100ms", MAX_QUERY_TIMEOUT)),
]
SettleTime = Annotated[
    str, _duration_field(MAX_SETTLE_TIME, "0s"), AfterValidator(_duration_within("0s", MAX_SETTLE_TIME))
]
RequestTimeout = Annotated[
    str,
    _duration_field(MAX_REQUEST_TIMEOUT, "1ms"),
    AfterValidator(_duration_within("1ms", MAX_REQUEST_TIMEOUT)),
]

LoadTestDuration = Annotated[
    str,
    _duration_field(MAX_LOAD_TEST_DURATION, "1s"),
    AfterValidator(_duration_within("1s", MAX_LOAD_TEST_DURATION)),
]
LoadTestWarmup = Annotated[
    str,
    _duration_field(MAX_LOAD_TEST_WARMUP, "0s"),
    AfterValidator(_duration_within("0s", MAX_LOAD_TEST_WARMUP)),
]
LoadTestStableWindow = Annotated[
    str, _duration_field("24h", "1m"), AfterValidator(_duration_within("1m", "24h"))
]
LoadTestLatency = Annotated[
    str,
    _duration_field(MAX_LOAD_TEST_REQUEST_TIMEOUT, "1ms"),
    AfterValidator(_duration_within("1ms", MAX_LOAD_TEST_REQUEST_TIMEOUT)),
]

# Object and version names. metadata.name becomes a Service name (DNS-1035: starts with a letter, no
# dots, at most 63 characters) and a label value; versions are what model bundles carry: SemVer 2.0.
DNS_1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(\+([0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*))?$"
)
NAME_RULE = {
    "rule": f"self.metadata.name.size() <= 63 && self.metadata.name.matches('{DNS_1035_PATTERN}')",
    "message": "metadata.name must be a DNS-1035 label (at most 63 lower-case letters, digits and '-', "
    "starting with a letter): it names the model's Service",
}


def object_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a ModelDeployment (its children's names and labels derive from it).

    >>> object_name_problem("fraud.v2")
    "metadata.name: 'fraud.v2' is not a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63 characters): the model's Service is named after it"
    >>> object_name_problem("fraud-v2") is None
    True
    """
    if len(name) <= 63 and re.fullmatch(DNS_1035_PATTERN, name):
        return None
    return (
        f"metadata.name: {name!r} is not a DNS-1035 label (lower-case letters, digits and '-', starting "
        "with a letter, at most 63 characters): the model's Service is named after it"
    )


DEFAULT_STEPS = (5, 20, 50)
PLACEHOLDERS = ("name", "namespace", "version", "stableVersion", "interval")
_PLACEHOLDER = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")


class ApiModel(BaseModel):
    """Base for API objects: camelCase on the wire, unknown fields refused (like a structural schema)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------------------------- spec


# ------------------------------------------------------------------------- spec.model.registry (MLflow)

MIN_REGISTRY_POLL = "10s"
MAX_REGISTRY_POLL = "24h"
RegistryPollInterval = Annotated[
    str,
    _duration_field(MAX_REGISTRY_POLL, MIN_REGISTRY_POLL),
    AfterValidator(_duration_within(MIN_REGISTRY_POLL, MAX_REGISTRY_POLL)),
]
# MLflow alias names: letters, digits, '_' and '-'; "latest" and v<digits> are reserved by MLflow.
MLFLOW_ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
MLFLOW_MODEL_NAME_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_. ]*$"


class RegistryUpdatePolicy(enum.StrEnum):
    """What the operator does when the watched alias points at a version the spec does not serve."""

    PROPOSE = "Propose"  # status.registry.pendingVersion + Event NewModelVersionAvailable; spec untouched
    APPLY = "Apply"  # the operator patches spec.model (field manager mlcanary-registry)


class ModelRegistry(ApiModel):
    """An MLflow Model Registry alias the served version follows (see docs/registry.md)."""

    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.promotionAlias) || self.promotionAlias != self.alias",
                    "message": "promotionAlias must differ from alias: the operator never moves the alias it watches",
                },
                {
                    "rule": "!(has(self.bearerTokenSecret) && has(self.basicAuthSecret))",
                    "message": "give at most one of bearerTokenSecret and basicAuthSecret",
                },
            ]
        },
    )

    tracking_uri: str = Field(
        max_length=2048,
        pattern=r"^https?://[^\s@]+$",
        description="Base URL of the MLflow tracking server (its REST API is under /api/2.0/mlflow). "
        "Credentials never go in it: use bearerTokenSecret or basicAuthSecret.",
    )
    registered_model: str = Field(
        min_length=1,
        max_length=256,
        pattern=MLFLOW_MODEL_NAME_PATTERN,
        description="Name of the registered model in MLflow.",
    )
    alias: str = Field(
        min_length=1,
        max_length=255,
        pattern=MLFLOW_ALIAS_PATTERN,
        description="The alias to follow (e.g. champion). Aliases, not the deprecated stages.",
    )
    poll_interval: RegistryPollInterval = Field(
        default="1m",
        description="How often the alias is resolved (10s-24h). One request per registered model and "
        "alias per interval, however many ModelDeployments follow it.",
    )
    update_policy: RegistryUpdatePolicy = Field(
        default=RegistryUpdatePolicy.PROPOSE,
        description="Propose (default, GitOps: status.registry.pendingVersion and an Event; the spec "
        "stays the truth) or Apply (the operator patches spec.model.version, uri and sha256).",
    )
    promotion_alias: str | None = Field(
        default=None,
        max_length=255,
        pattern=MLFLOW_ALIAS_PATTERN,
        description="Alias the operator sets on a version it promoted (e.g. production). Never the "
        "alias it watches.",
    )
    bearer_token_secret: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a bearer token (what MLFLOW_TRACKING_TOKEN holds)."
    )
    basic_auth_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of a Secret with `username` and `password` keys (MLflow's basic-auth app).",
    )
    timeout: QueryTimeout = Field(default="10s", description="Timeout of each registry request (100ms-5m).")

    @model_validator(mode="after")
    def _alias_rules(self) -> ModelRegistry:
        if self.promotion_alias is not None and self.promotion_alias == self.alias:
            raise ValueError(
                "promotionAlias must differ from alias: the operator never moves the alias it watches"
            )
        if self.bearer_token_secret is not None and self.basic_auth_secret is not None:
            raise ValueError("give at most one of bearerTokenSecret and basicAuthSecret")
        return self


class ModelRef(ApiModel):
    """Which model to serve."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$",
        description="Model name, as the serving pods report it in the model_name metric label.",
    )
    version: str = Field(
        min_length=1,
        max_length=63,
        pattern=SEMVER_PATTERN,
        description="Model version, a semantic version (e.g. 2.1.0), as the bundle's manifest carries "
        "it. Changing it starts a canary rollout of the new version.",
    )
    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^(file|https?|s3)://.+",
        description="Where the model bundle lives: file://, http(s):// or s3:// URI of a bundle "
        "directory or archive.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        description="Expected sha256 of the bundle's manifest. When set, serving pods refuse a bundle "
        "whose manifest does not match and stay unready.",
    )


class ModelSource(ModelRef):
    """Which model to serve, and optionally the registry alias its version follows."""

    registry: ModelRegistry | None = Field(
        default=None,
        description="Follow an MLflow Model Registry alias: new versions are proposed in "
        "status.registry (or applied to this spec with updatePolicy Apply). Not part of a revision: "
        "changing it starts no canary.",
    )

    def model_ref(self) -> ModelRef:
        """The model of a revision: where versions come from is not part of it."""
        return ModelRef.model_validate(self.model_dump(exclude={"registry"}))


class EnvVar(ApiModel):
    """An environment variable for the serving container."""

    name: str = Field(
        min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name."
    )
    value: str = Field(default="", max_length=32768, description="Variable value.")


# Kubernetes resource names (cpu, memory, nvidia.com/gpu) and quantities (500m, 1Gi, 2.5, 1e3).
RESOURCE_NAME_PATTERN = r"^([a-z0-9.-]+/)?[a-zA-Z0-9._-]+$"
Quantity = Annotated[
    str,
    Field(
        max_length=64,
        pattern=r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$",
    ),
]


class Resources(ApiModel):
    """Compute resources of the serving container (Kubernetes quantities)."""

    # Map keys cannot be constrained by a structural schema: the model checks them.
    requests: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Minimum resources, e.g. cpu: 500m."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Maximum resources, e.g. memory: 1Gi."
    )

    @field_validator("requests", "limits")
    @classmethod
    def _resource_names(cls, values: dict[str, str] | None) -> dict[str, str] | None:
        for name in values or {}:
            if len(name) > 253 or not re.fullmatch(RESOURCE_NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a resource name (cpu, memory, example.com/gpu)")
        return values


MAX_REPLICAS = 1000
METRIC_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:./-]*$"
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class ScaledObjectRef(ApiModel):
    """The object an Object metric describes (autoscaling/v2 CrossVersionObjectReference)."""

    api_version: str = Field(
        min_length=1, max_length=253, pattern=r"^([a-z0-9.-]+/)?v[0-9a-z]+$", description="e.g. v1."
    )
    kind: str = Field(
        min_length=1, max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$", description="e.g. Service."
    )
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Its name.")


class ScalingMetricType(enum.StrEnum):
    PODS = "Pods"
    OBJECT = "Object"
    EXTERNAL = "External"


class ScalingMetric(ApiModel):
    """A custom metric to scale on: the subset of an autoscaling/v2 MetricSpec of type Pods, Object or
    External (served by a metrics adapter such as prometheus-adapter or KEDA)."""

    # CEL mirrors of the validators below, so a real API server refuses these at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.targetValue) != has(self.targetAverageValue)",
                    "message": "give exactly one of targetValue and targetAverageValue",
                },
                {
                    "rule": "self.type != 'Pods' || has(self.targetAverageValue)",
                    "message": "a Pods metric takes targetAverageValue (a per-pod average)",
                },
                {
                    "rule": "has(self.describedObject) == (self.type == 'Object')",
                    "message": "describedObject is required for, and only for, an Object metric",
                },
            ]
        },
    )

    type: ScalingMetricType = Field(description="Pods, Object or External.")
    name: str = Field(
        min_length=1, max_length=253, pattern=METRIC_NAME_PATTERN, description="The metric's name."
    )
    selector: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, max_length=16, description="Label matches narrowing the metric's series (matchLabels)."
    )
    described_object: ScaledObjectRef | None = Field(
        default=None, description="The object the metric describes (Object metrics only)."
    )
    target_value: Quantity | None = Field(
        default=None, description="Target value of the metric as a whole (Object, External)."
    )
    target_average_value: Quantity | None = Field(
        default=None, description="Target value per pod (Pods, Object, External)."
    )

    @field_validator("selector")
    @classmethod
    def _label_keys(cls, values: dict[str, str] | None) -> dict[str, str] | None:
        for key in values or {}:
            if len(key) > 317 or not re.fullmatch(LABEL_KEY_PATTERN, key):
                raise ValueError(f"{key!r} is not a label key")
        return values

    @model_validator(mode="after")
    def _target_fits_type(self) -> ScalingMetric:
        if (self.target_value is None) == (self.target_average_value is None):
            raise ValueError("give exactly one of targetValue and targetAverageValue")
        if self.type == ScalingMetricType.PODS and self.target_average_value is None:
            raise ValueError("a Pods metric takes targetAverageValue (a per-pod average)")
        if (self.described_object is not None) != (self.type == ScalingMetricType.OBJECT):
            raise ValueError("describedObject is required for, and only for, an Object metric")
        return self


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) per revision instead of a fixed replica count."""

    # CEL mirrors of the validators below, so a real API server refuses these at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas cannot be above maxReplicas",
                },
                {
                    "rule": "has(self.targetCPUUtilizationPercentage) != has(self.metric)",
                    "message": "give exactly one of targetCPUUtilizationPercentage and metric",
                },
            ]
        },
    )

    min_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS, description="Fewest pods (1-1000).")
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS, description="Most pods (1-1000).")
    target_cpu_utilization_percentage: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU use to keep, in percent of the pods' CPU request (1-1000).",
    )
    metric: ScalingMetric | None = Field(default=None, description="A custom metric to scale on instead.")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas cannot be above maxReplicas ({self.min_replicas} > {self.max_replicas})"
            )
        if (self.target_cpu_utilization_percentage is None) == (self.metric is None):
            raise ValueError("give exactly one of targetCPUUtilizationPercentage and metric")
        return self


class ServingTemplate(ApiModel):
    """How each revision's serving pods run."""

    image: str = Field(
        default="mlcanary/serving:0.1.0",
        min_length=1,
        max_length=1024,
        description="Serving image; it runs `python -m mlcanary_serving --bundle URI`.",
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Replicas of the stable revision. With the replicas router this is the total "
        "shared by stable and canary. Ignored when autoscaling is set.",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Container port the server listens on.")
    resources: Resources | None = Field(default=None, description="Container resources.")
    env: list[EnvVar] | None = Field(
        default=None, max_length=64, description="Extra environment for the container."
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Service account the serving pods run as.",
    )


class Serving(ServingTemplate):
    """How each revision's serving pods run, and how many."""

    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scale each revision with a HorizontalPodAutoscaler. With the gatewayAPI and istio "
        "routers each revision scales on its own load; with the replicas router the stable revision "
        "scales and the canary follows the stable's current replica count at the step's share.",
    )

    @property
    def base_replicas(self) -> int:
        """The stable revision's replicas the operator can count on: the fixed count, or the HPA's
        floor."""
        return self.autoscaling.min_replicas if self.autoscaling is not None else self.replicas


class Rollout(ApiModel):
    """How traffic moves to a new version."""

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [*DEFAULT_STEPS, 100],
        min_length=1,
        max_length=20,
        description="Canary traffic weights in percent, strictly increasing, each 1-100. A final 100 "
        "is implied when the list stops short. Each step below 100 is judged by the analysis; "
        "reaching 100 promotes the canary. Default 5, 20, 50; with the replicas router, those of them "
        "it can serve with whole pods (see serving.replicas).",
    )
    step_duration: StepDuration = Field(
        default="5m", description="Minimum time at each step before it may advance (e.g. 5m; at most 168h)."
    )
    progress_deadline: Deadline = Field(
        default="10m",
        description="How long a canary may take to become ready, or the router to confirm a weight, "
        "before the rollout is rolled back (1s-24h).",
    )
    scale_down_delay: ScaleDownDelay = Field(
        default="30s",
        description="How long a revision that no longer receives traffic keeps running before it is "
        "removed, so clients with open connections drain (at most 24h).",
    )
    paused: bool = Field(
        default=False, description="Hold the rollout where it is: no step advances while true."
    )

    @field_validator("steps")
    @classmethod
    def _steps_valid(cls, steps: list[int]) -> list[int]:
        for weight in steps:
            if not 1 <= weight <= 100:
                raise ValueError(f"step weight {weight} is outside 1-100")
        for previous, current in itertools.pairwise(steps):
            if current <= previous:
                raise ValueError(f"steps must be strictly increasing ({previous} then {current})")
        return steps

    def effective_steps(self) -> list[int]:
        """The steps with the implied final 100 added."""
        return self.steps if self.steps[-1] == 100 else [*self.steps, 100]


class BuiltinMetric(enum.StrEnum):
    """Metrics the operator knows how to query from the serving pods' own metrics."""

    ERROR_RATE = "errorRate"
    LATENCY_P99 = "latencyP99"
    INPUT_DRIFT = "inputDrift"
    PREDICTION_DRIFT = "predictionDrift"
    ACCURACY = "accuracy"
    AGREEMENT = "agreement"
    SCORE_DIFFERENCE = "scoreDifference"


SHADOW_BUILTINS = (BuiltinMetric.AGREEMENT, BuiltinMetric.SCORE_DIFFERENCE)
"""Measured by a canary pod that also scores the stable model: only in the shadow phase."""


class Metric(ApiModel):
    """One check run at every analysis round of a step."""

    # Mirrors of the validators below as CEL rules, so a real API server refuses these at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.builtin) != has(self.query)",
                    "message": "give exactly one of builtin and query",
                },
                {
                    "rule": "has(self.min) || has(self.max) || has(self.compareTo)",
                    "message": "give min, max or compareTo: a metric with no bound can never fail",
                },
            ]
        },
    )

    name: str = Field(min_length=1, max_length=63, description="Name shown in status and reports.")
    builtin: BuiltinMetric | None = Field(
        default=None,
        description="A built-in metric: errorRate, latencyP99, inputDrift, predictionDrift, accuracy "
        "(agreement and scoreDifference are the shadow phase's, set by spec.shadow). Exactly one of "
        "builtin and query.",
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="A PromQL query returning one number. Placeholders: {{name}}, {{namespace}}, "
        "{{version}}, {{stableVersion}}, {{interval}}; values are escaped as PromQL strings.",
    )
    min: float | None = Field(
        default=None,
        ge=-LIMIT,
        le=LIMIT,
        allow_inf_nan=False,
        description="The check fails when the value is below this.",
    )
    max: float | None = Field(
        default=None,
        ge=-LIMIT,
        le=LIMIT,
        allow_inf_nan=False,
        description="The check fails when the value is above this.",
    )
    compare_to: Literal["stable"] | None = Field(
        default=None,
        description="Compare the canary with the stable revision instead of (or as well as) fixed "
        "bounds: the canary fails when it is worse than stable by more than the tolerance.",
    )
    tolerance: float | None = Field(
        default=None,
        ge=0,
        le=LIMIT,
        allow_inf_nan=False,
        description="With compareTo: allowed absolute difference from stable (default 0).",
    )
    relative_tolerance: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description="With compareTo: allowed difference as a fraction of the stable value (0.1 = 10%).",
    )
    quantile: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="For latencyP99 and scoreDifference: the quantile to measure (default 0.99).",
    )
    confidence: float | None = Field(
        default=None,
        gt=0.5,
        lt=1,
        description="For errorRate with compareTo: confidence level of the two-proportion test "
        "(default 0.95).",
    )
    min_requests: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="Fewer canary requests than this in the window make the check Inconclusive.",
    )
    dry_run: bool = Field(
        default=False, description="Measure and record this check but never act on its verdict."
    )

    @model_validator(mode="after")
    def _one_source_and_a_bound(self) -> Metric:
        if (self.builtin is None) == (self.query is None):
            raise ValueError("give exactly one of builtin and query")
        if self.min is None and self.max is None and self.compare_to is None:
            raise ValueError("give min, max or compareTo: a metric with no bound can never fail")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.query is not None:
            for placeholder in _PLACEHOLDER.findall(self.query):
                if placeholder not in PLACEHOLDERS:
                    raise ValueError(
                        f"unknown placeholder {{{{{placeholder}}}}} in query; known: "
                        + ", ".join("{{" + p + "}}" for p in PLACEHOLDERS)
                    )
        return self


class InconclusivePolicy(enum.StrEnum):
    """What to do when analysis cannot decide."""

    HOLD = "Hold"
    ROLLBACK = "Rollback"


class SecretKeyRef(ApiModel):
    """A key of a Secret in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Secret name.")
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key within the Secret."
    )


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the ModelDeployment's namespace."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="ConfigMap name."
    )
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key within the ConfigMap."
    )


class PrometheusSource(ApiModel):
    """Where analysis queries go, when not the operator's default Prometheus."""

    address: str = Field(max_length=2048, pattern=r"^https?://.+", description="Prometheus base URL.")
    bearer_token_secret: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a bearer token."
    )
    basic_auth_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of a Secret with `username` and `password` keys.",
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Skip TLS certificate verification (not recommended)."
    )
    timeout: QueryTimeout = Field(default="10s", description="Query timeout (100ms-5m).")


class Analysis(ApiModel):
    """How each step is judged."""

    interval: AnalysisInterval = Field(
        default="1m",
        description="Time between analysis rounds, and the window each query covers (1s-24h).",
    )
    failure_limit: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Failed rounds in one rollout that trigger a rollback (1 = the first failure).",
    )
    inconclusive_limit: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Inconclusive rounds in a row after which onInconclusive applies.",
    )
    consecutive_error_limit: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Rounds in a row whose queries errored (metrics backend down) after which they "
        "count as inconclusive. Errors alone never fail a canary.",
    )
    on_inconclusive: InconclusivePolicy = Field(
        default=InconclusivePolicy.HOLD,
        description="Hold (wait for data, never advance on missing data) or Rollback once "
        "inconclusiveLimit is reached.",
    )
    prometheus: PrometheusSource | None = Field(
        default=None, description="Prometheus to query; defaults to the operator's setting."
    )
    metrics: list[Metric] = Field(
        default_factory=list, max_length=32, description="Checks run at every round."
    )

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, metrics: list[Metric]) -> list[Metric]:
        seen: set[str] = set()
        for metric in metrics:
            if metric.name in seen:
                raise ValueError(f"metric name {metric.name!r} appears twice")
            seen.add(metric.name)
        return metrics


class LoadTestSLO(ApiModel):
    """What the canary must meet under the load test. A generator that could not produce the load
    (achieved rate under minAchievedRatio of the requested one) or measured too few requests makes
    the result Inconclusive, which never passes."""

    max_latency_p95: LoadTestLatency | None = Field(
        default=None, description="Largest allowed 95th percentile latency (e.g. 250ms; 1ms-60s)."
    )
    max_latency_p99: LoadTestLatency | None = Field(
        default=None, description="Largest allowed 99th percentile latency (e.g. 500ms; 1ms-60s)."
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Largest allowed share of failed requests (non-2xx, timeouts, connection errors; 0-1).",
    )
    min_achieved_ratio: float = Field(
        default=0.95,
        ge=0.1,
        le=1,
        allow_inf_nan=False,
        description="Achieved request rate divided by the requested one below which the result is "
        "Inconclusive (0.1-1): the generator did not produce the load asked for.",
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        le=10_000_000,
        description="Fewer measured requests than this make the result Inconclusive.",
    )


class LoadTestStableRate(ApiModel):
    """The load test's rate from what the stable revision serves: its request rate over ``window``
    (from Prometheus, ``mlcanary_requests_total``) times ``headroom``, within minRps-maxRps."""

    # CEL mirror of the validator below, so a real API server refuses this at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minRps) || !has(self.maxRps) || self.minRps <= self.maxRps",
                    "message": "minRps cannot be above maxRps",
                }
            ]
        },
    )

    headroom: float = Field(
        default=1.5,
        ge=1,
        le=100,
        allow_inf_nan=False,
        description="Factor on the stable's observed rate (1-100): 1.5 tests at 150% of today's load.",
    )
    window: LoadTestStableWindow = Field(
        default="1h", description="Window the stable's rate is averaged over (1m-24h)."
    )
    min_rps: float = Field(
        default=1,
        gt=0,
        le=MAX_LOAD_TEST_RPS,
        allow_inf_nan=False,
        description="Lowest rate tested, also when the stable served nothing in the window.",
    )
    max_rps: float = Field(
        default=1000,
        gt=0,
        le=MAX_LOAD_TEST_RPS,
        allow_inf_nan=False,
        description="Highest rate tested (at most 10000).",
    )

    @model_validator(mode="after")
    def _range(self) -> LoadTestStableRate:
        if self.min_rps > self.max_rps:
            raise ValueError(f"minRps cannot be above maxRps ({self.min_rps:g} > {self.max_rps:g})")
        return self

    def requested(self, stable_rps: float) -> float:
        """The rate to test: the stable's times the headroom, within the bounds, to 0.1 rps."""
        return round(min(self.max_rps, max(self.min_rps, stable_rps * self.headroom)), 1)


BODIES_WITH_JOB_TEMPLATE = (
    "bodiesConfigMap is for the built-in generator: a jobTemplate brings its own bodies"
)


class LoadTest(ApiModel):
    """A load test run once per new revision, after its pods are ready and before any user request
    reaches it, against the revision's own Service. Give rps (the built-in generator, `python -m
    mlcanary_serving.loadtest` in the serving image, sending rows sampled from the bundle) or
    jobTemplate (your own pod, whose exit code 0 passes)."""

    # CEL mirror of the validator below, so a real API server refuses this at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.rps), has(self.rpsFromStable), has(self.jobTemplate)]"
                    ".filter(x, x).size() == 1",
                    "message": "give exactly one of rps, rpsFromStable and jobTemplate",
                },
                {
                    "rule": "!has(self.bodiesConfigMap) || !has(self.jobTemplate)",
                    "message": BODIES_WITH_JOB_TEMPLATE,
                },
            ]
        },
    )

    rps: float | None = Field(
        default=None,
        gt=0,
        le=MAX_LOAD_TEST_RPS,
        allow_inf_nan=False,
        description="Requests per second the built-in generator sends (open loop, at most 10000).",
    )
    rps_from_stable: LoadTestStableRate | None = Field(
        default=None,
        description="Derive the built-in generator's rate from the stable revision's observed request "
        "rate (Prometheus) times a headroom, instead of a fixed rps.",
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        le=MAX_LOAD_TEST_CONCURRENCY,
        description="Most requests in flight at once (connections; 1-1000). Too few for the rate and "
        "the canary's latency shows as an achieved rate under the requested one.",
    )
    duration: LoadTestDuration = Field(default="60s", description="How long the measured load runs (1s-1h).")
    warmup: LoadTestWarmup = Field(
        default="10s", description="Load sent before measuring starts, not counted (0s-10m)."
    )
    request_timeout: LoadTestLatency = Field(
        default="5s", description="A request not answered within this counts as an error (1ms-60s)."
    )
    slo: LoadTestSLO = Field(default_factory=LoadTestSLO, description="What the canary must meet.")
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Image of the built-in generator (default: the revision's serving image).",
    )
    bodies_config_map: ConfigMapKeyRef | None = Field(
        default=None,
        description="The built-in generator's request bodies from a ConfigMap key instead of the rows "
        "the bundle ships: a JSON array whose items are rows of feature values (sent as "
        '{"features": [row]}) or whole /predict request objects (sent as they are). Mounted read-only '
        "into the generator's pod; the operator never reads it.",
    )
    job_template: dict[str, Any] | None = Field(
        default=None,
        description="Your own load test instead of the built-in one: a pod template (metadata, spec) "
        "run as a Job with restartPolicy Never; exit code 0 passes. Its pods get MLCANARY_TARGET_URL "
        "(the canary revision's Service). At most 64 KiB.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> LoadTest:
        given = [self.rps is not None, self.rps_from_stable is not None, self.job_template is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of rps, rpsFromStable and jobTemplate")
        if self.bodies_config_map is not None and self.job_template is not None:
            raise ValueError(BODIES_WITH_JOB_TEMPLATE)
        if self.job_template is not None:
            if len(json.dumps(self.job_template)) > MAX_JOB_TEMPLATE_BYTES:
                raise ValueError(f"jobTemplate is larger than {MAX_JOB_TEMPLATE_BYTES} bytes")
            containers = (self.job_template.get("spec") or {}).get("containers")
            if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
                raise ValueError("jobTemplate.spec.containers must list at least one container")
        return self

    def measured_seconds(self) -> float:
        """Warmup plus measured duration: how long the generator runs."""
        return (parse_duration(self.warmup) + parse_duration(self.duration)).total_seconds()


GatewayDuration = Annotated[str, Field(pattern=GATEWAY_DURATION_PATTERN)]


class ParentRef(ApiModel):
    """A Gateway API parent: a Gateway, or a Service in mesh (GAMMA) mode."""

    name: str = Field(min_length=1, max_length=253, description="Parent name.")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Parent namespace (default: the route's).",
    )
    group: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^$|" + DNS_SUBDOMAIN_PATTERN,
        description='Parent group (default gateway.networking.k8s.io for a Gateway, "" for a Service).',
    )
    kind: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
        description="Parent kind (default Gateway; Service for mesh/GAMMA mode).",
    )
    section_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Listener name on a Gateway, or port name on a Service.",
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="Port (listener) on the parent.")

    def effective_kind(self) -> str:
        return self.kind or "Gateway"

    def effective_group(self) -> str:
        """A Service parent (GAMMA) lives in the core group: default it to "" rather than to the
        Gateway API group, which the API server would fill in and which no mesh accepts."""
        if self.group is not None:
            return self.group
        return "" if self.effective_kind() == "Service" else "gateway.networking.k8s.io"


class RouteTimeouts(ApiModel):
    """HTTPRoute rule timeouts (Gateway API durations: 1h, 30s, 500ms, 1m30s; 0s disables)."""

    # CEL mirrors of the validators below, so a real API server refuses these at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.request) && has(self.backendRequest) && duration(self.request) != "
                    "duration('0s') && duration(self.backendRequest) > duration(self.request))",
                    "message": "backendRequest cannot be longer than request",
                }
            ]
        },
    )

    request: GatewayDuration | None = Field(default=None, description="Timeout for the whole client request.")
    backend_request: GatewayDuration | None = Field(
        default=None, description="Timeout for one request from the gateway to a backend."
    )

    @model_validator(mode="after")
    def _backend_within_request(self) -> RouteTimeouts:
        if self.request is None or self.backend_request is None:
            return self
        request = parse_duration(self.request)
        if request.total_seconds() != 0 and parse_duration(self.backend_request) > request:
            raise ValueError(
                f"backendRequest {self.backend_request} cannot be longer than request {self.request}"
            )
        return self


class PathMatch(ApiModel):
    """An HTTP path match."""

    # CEL mirrors of the validators below, so a real API server refuses these at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.type) && self.type == 'RegularExpression') || !has(self.value) || "
                    "self.value.startsWith('/')",
                    "message": "an Exact or PathPrefix path must start with '/'",
                }
            ]
        },
    )

    type: Literal["PathPrefix", "Exact", "RegularExpression"] = Field(
        default="PathPrefix", description="PathPrefix, Exact or RegularExpression (implementation dialect)."
    )
    value: str = Field(default="/", min_length=1, max_length=1024, description="Path or expression.")

    @model_validator(mode="after")
    def _valid_path(self) -> PathMatch:
        if self.type == "RegularExpression":
            return self
        value = self.value
        if not value.startswith("/"):
            raise ValueError(f"path {value!r} must start with '/'")
        for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
            if bad in value:
                raise ValueError(f"path {value!r} must not contain {bad!r}")
        if value.endswith(("/..", "/.")):
            raise ValueError(f"path {value!r} must not end with '/.' or '/..'")
        if not _PATH_CHARS.match(value):
            raise ValueError(f"path {value!r} contains characters that are not allowed in a URL path")
        return self


class HeaderMatch(ApiModel):
    """Match one request header."""

    name: str = Field(min_length=1, max_length=256, pattern=HTTP_NAME_PATTERN, description="Header name.")
    value: str = Field(min_length=1, max_length=4096, description="Value (or expression).")
    type: Literal["Exact", "RegularExpression"] = Field(
        default="Exact", description="Exact or RegularExpression."
    )


class QueryParamMatch(ApiModel):
    """Match one query parameter."""

    name: str = Field(min_length=1, max_length=256, pattern=HTTP_NAME_PATTERN, description="Parameter name.")
    value: str = Field(min_length=1, max_length=1024, description="Value (or expression).")
    type: Literal["Exact", "RegularExpression"] = Field(
        default="Exact", description="Exact or RegularExpression."
    )


class RouteMatch(ApiModel):
    """Conditions a request must all meet (path, headers, query parameters, method)."""

    path: PathMatch | None = Field(
        default=None, description="Path match (default: the router's own path match)."
    )
    headers: list[HeaderMatch] | None = Field(default=None, max_length=16, description="Header matches.")
    query_params: list[QueryParamMatch] | None = Field(
        default=None, max_length=16, description="Query parameter matches."
    )
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] | None = (
        Field(default=None, description="HTTP method.")
    )


class RouteRule(ApiModel):
    """An extra rule sending matching requests to one revision, whatever the canary's weight: for
    example a header match that pins testers to the canary. Weight changes never touch it."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Rule name (unique; used as the Istio route name and in messages).",
    )
    matches: list[RouteMatch] = Field(
        min_length=1, max_length=8, description="The rule applies when any one of these matches."
    )
    backend: Literal["canary", "stable"] = Field(
        default="canary",
        description="Where matching requests go. `canary` goes to the stable revision while no canary "
        "is running or while the canary is not available.",
    )


def _unique_rule_names(rules: list[RouteRule] | None) -> list[RouteRule] | None:
    seen = {WEIGHTED_RULE}
    for rule in rules or []:
        if rule.name in seen:
            raise ValueError(
                f"rule name {rule.name!r} is used twice"
                if rule.name != WEIGHTED_RULE
                else f"rule name {WEIGHTED_RULE!r} is reserved for the weighted rule"
            )
        seen.add(rule.name)
    return rules


# Shared by the routers that accept extraRules (Gateway API and Istio).
_EXTRA_RULES_CONFIG = ConfigDict(
    **ApiModel.model_config,
    json_schema_extra={
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.extraRules) || self.extraRules.all(r, r.name != 'weighted' && "
                "self.extraRules.exists_one(o, o.name == r.name))",
                "message": "extraRules names must be unique and not 'weighted'",
            }
        ]
    },
)


class GatewayAPIRouter(ApiModel):
    """Split traffic with a Gateway API HTTPRoute owned by the operator."""

    # CEL mirror of the extraRules validator, so a real API server refuses these at apply time.
    model_config = _EXTRA_RULES_CONFIG

    parent_refs: list[ParentRef] = Field(
        min_length=1,
        max_length=32,
        description="Gateways (or, in mesh/GAMMA mode, the model's entry Service) to attach to.",
    )
    hostnames: list[Annotated[str, Field(max_length=253, pattern=HOSTNAME_PATTERN)]] | None = Field(
        default=None, max_length=16, description="Hostnames the route matches (default: the parent's)."
    )
    path: PathMatch = Field(default_factory=PathMatch, description="Path match of every rule (default /).")
    timeouts: RouteTimeouts | None = Field(default=None, description="Timeouts of every rule.")
    extra_rules: list[RouteRule] | None = Field(
        default=None,
        max_length=15,
        description="Extra rules, each sending its matches to one revision (e.g. a header match "
        "pinning testers to the canary); weight changes never touch them.",
    )

    @field_validator("extra_rules")
    @classmethod
    def _rule_names(cls, rules: list[RouteRule] | None) -> list[RouteRule] | None:
        return _unique_rule_names(rules)


class IstioRetries(ApiModel):
    """Istio retry policy of the routes."""

    attempts: int = Field(ge=0, le=100, description="Number of retries (0 disables retries).")
    per_try_timeout: RequestTimeout | None = Field(default=None, description="Timeout of each try (1ms-24h).")
    retry_on: str | None = Field(
        default=None, max_length=256, description="Envoy retry conditions, e.g. 5xx,connect-failure,reset."
    )


class IstioRouter(ApiModel):
    """Split traffic with an Istio VirtualService owned by the operator."""

    # CEL mirror of the extraRules validator, so a real API server refuses these at apply time.
    model_config = _EXTRA_RULES_CONFIG

    hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        min_length=1,
        max_length=32,
        description="Hosts the VirtualService applies to: the model's entry Service name for mesh "
        "traffic, and/or external hostnames served through `gateways`.",
    )
    gateways: list[Annotated[str, Field(min_length=1, max_length=317)]] | None = Field(
        default=None,
        max_length=16,
        description="Istio Gateways (namespace/name) to bind to; add `mesh` to keep applying to "
        "sidecar traffic too. Omit for mesh traffic only.",
    )
    path: PathMatch | None = Field(default=None, description="Path match of every route (default: all).")
    timeout: RequestTimeout | None = Field(default=None, description="Timeout of each request (1ms-24h).")
    retries: IstioRetries | None = Field(default=None, description="Retry policy of each route.")
    extra_rules: list[RouteRule] | None = Field(
        default=None,
        max_length=15,
        description="Extra routes evaluated before the weighted one, each sending its matches to one "
        "revision; weight changes never touch them.",
    )
    settle_time: SettleTime = Field(
        default="10s",
        description="When istiod reports no status for the VirtualService (status reporting is off by "
        "default), its weights count as in effect once the same generation has been read back for "
        "this long.",
    )
    require_status: bool = Field(
        default=False,
        description="Count weights as in effect only when istiod reports the VirtualService "
        "Reconciled for its generation (needs PILOT_ENABLE_STATUS and config distribution tracking).",
    )

    @field_validator("extra_rules")
    @classmethod
    def _rule_names(cls, rules: list[RouteRule] | None) -> list[RouteRule] | None:
        return _unique_rule_names(rules)


class ReplicaRouter(ApiModel):
    """No mesh: traffic follows the ratio of ready replicas behind one shared Service."""

    settle_time: SettleTime = Field(
        default="2s",
        description="A split counts as in effect once the same ready pods have been read back for this "
        "long: a Service's endpoints reach every node's proxy some moments after pods turn ready or "
        "unready (at most 10m).",
    )


class RouterKind(enum.StrEnum):
    """The traffic routers. What differs between them for the engine is decided here, once."""

    GATEWAY_API = "gatewayAPI"
    ISTIO = "istio"
    REPLICAS = "replicas"

    @property
    def follows_ready_pods(self) -> bool:
        """Whether the canary's share is its share of ready pods behind one Service (no proxy).

        Then the canary is sized for its step (:func:`mlcanary.weights.replica_plan`), its pods take
        traffic as soon as they are ready, a partly ready canary serves with the pods it has, and the
        model's entry Service selects the pods of every revision. Otherwise a proxy applies weights
        to the revision Services, both revisions run every replica, and the entry Service selects
        only the stable revision (clients outside the mesh never bypass the weights)."""
        return self is RouterKind.REPLICAS


class Traffic(ApiModel):
    """How traffic is split between stable and canary. Exactly one of gatewayAPI, istio, replicas."""

    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.gatewayAPI), has(self.istio), has(self.replicas)]"
                    ".filter(x, x).size() == 1",
                    "message": "give exactly one router of gatewayAPI, istio, replicas",
                }
            ]
        },
    )

    gateway_api: GatewayAPIRouter | None = Field(
        default=None, alias="gatewayAPI", description="Gateway API HTTPRoute router."
    )
    istio: IstioRouter | None = Field(default=None, description="Istio VirtualService router.")
    replicas: ReplicaRouter | None = Field(
        default=None, description="Replica-ratio router (no mesh): weight follows replica counts."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Traffic:
        chosen = [kind.value for kind in RouterKind if self.router_config(kind) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "give exactly one router of gatewayAPI, istio, replicas"
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        return self

    def router_config(self, kind: RouterKind) -> BaseModel | None:
        match kind:
            case RouterKind.GATEWAY_API:
                return self.gateway_api
            case RouterKind.ISTIO:
                return self.istio
            case RouterKind.REPLICAS:
                return self.replicas

    @property
    def router_kind(self) -> RouterKind:
        for kind in RouterKind:
            if self.router_config(kind) is not None:
                return kind
        raise AssertionError("validated: one router is set")


MAX_SHADOW_DURATION = "24h"
ShadowDuration = Annotated[
    str,
    _duration_field(MAX_SHADOW_DURATION, "1s"),
    AfterValidator(_duration_within("1s", MAX_SHADOW_DURATION)),
]


class AgreementBound(ApiModel):
    """The least share of mirrored rows on which the canary predicts the stable's label."""

    min: float = Field(ge=0, le=1, allow_inf_nan=False, description="Least share of equal labels (0-1).")
    noise_floor: float = Field(
        default=0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Disagreement a model shows against itself (non-deterministic models): the bound "
        "applied is min - noiseFloor (0-1, default 0).",
    )


class ScoreDifferenceBound(ApiModel):
    """The largest |canary score - stable score| allowed at a quantile of the mirrored rows."""

    max: float = Field(
        ge=0, le=LIMIT, allow_inf_nan=False, description="Largest score difference at the quantile."
    )
    quantile: float = Field(
        default=0.95, gt=0, lt=1, description="Quantile of the per-row differences (default 0.95)."
    )
    noise_floor: float = Field(
        default=0,
        ge=0,
        le=LIMIT,
        allow_inf_nan=False,
        description="Score difference a model shows against itself: the bound applied is "
        "max + noiseFloor (default 0).",
    )


class Shadow(ApiModel):
    """A phase before the first step: a share of live prediction requests is mirrored to the canary,
    whose pods score each one with both the canary and the stable model; users only ever get the
    stable's answers. The canary passes when the two models agree within the bounds."""

    # CEL mirror of the validator below, so a real API server refuses these at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.agreement) || has(self.scoreDifference)",
                    "message": "give agreement, scoreDifference or both: a shadow phase with no bound "
                    "can never fail",
                }
            ]
        },
    )

    duration: ShadowDuration = Field(
        default="5m",
        description="How long the shadow phase lasts at least (1s-24h); it passes once this has "
        "elapsed and the last round was successful.",
    )
    mirror_percent: int = Field(
        default=100, ge=1, le=100, description="Percent of prediction requests mirrored to the canary."
    )
    min_samples: int = Field(
        default=100,
        ge=1,
        le=1_000_000_000,
        description="Fewer compared rows than this in a round's window make it Inconclusive.",
    )
    agreement: AgreementBound | None = Field(
        default=None, description="Classifiers: least share of mirrored rows with the stable's label."
    )
    score_difference: ScoreDifferenceBound | None = Field(
        default=None,
        description="Probabilities and regressors: largest |canary - stable| score at a quantile.",
    )

    @model_validator(mode="after")
    def _a_bound(self) -> Shadow:
        if self.agreement is None and self.score_difference is None:
            raise ValueError(
                "give agreement, scoreDifference or both: a shadow phase with no bound can never fail"
            )
        return self


class EventReason(enum.StrEnum):
    """The reason of every Event the rollout engine emits: the contract notifications route on.

    One reason per transition (docs/notifications.md has the table); renaming one is a breaking change."""

    DEPLOYING = "Deploying"
    DEPLOY_RESTARTED = "DeployRestarted"
    READY = "Ready"
    CANARY_STARTED = "CanaryStarted"
    CANARY_UNAVAILABLE = "CanaryUnavailable"
    STEP_STARTED = "StepStarted"
    STEP_ADVANCED = "StepAdvanced"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_ERROR = "AnalysisError"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    PROMOTING = "Promoting"
    PROMOTED = "Promoted"
    ROLLING_BACK = "RollingBack"
    ABORTED = "Aborted"
    SUPERSEDING = "Superseding"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"
    RETRY = "Retry"
    REQUEST_IGNORED = "RequestIgnored"
    TRAFFIC_ABOVE_STEP = "TrafficAboveStep"
    ROUTER_CHANGED = "RouterChanged"
    LOAD_TEST_STARTED = "LoadTestStarted"
    LOAD_TEST_PASSED = "LoadTestPassed"
    LOAD_TEST_FAILED = "LoadTestFailed"
    LOAD_TEST_INCONCLUSIVE = "LoadTestInconclusive"
    # spec.retraining (mlcanary.retraining): the operator requests a training run, never trains
    RETRAIN_REQUESTED = "RetrainRequested"
    RETRAIN_SUPPRESSED = "RetrainSuppressed"
    RETRAIN_SUCCEEDED = "RetrainSucceeded"
    RETRAIN_FAILED = "RetrainFailed"
    SHADOW_STARTED = "ShadowStarted"
    SHADOW_PASSED = "ShadowPassed"
    SHADOW_FAILED = "ShadowFailed"
    # spec.model.registry (the registry poller, not the rollout engine)
    NEW_MODEL_VERSION_AVAILABLE = "NewModelVersionAvailable"
    MODEL_VERSION_APPLIED = "ModelVersionApplied"
    REGISTRY_UNREACHABLE = "RegistryUnreachable"


class NotificationProvider(enum.StrEnum):
    SLACK = "slack"
    MSTEAMS = "msteams"
    CLOUDEVENTS = "cloudevents"


class CloudEventsMode(enum.StrEnum):
    STRUCTURED = "structured"
    BINARY = "binary"


MAX_NOTIFICATION_ROUTES = 8


class NotificationRoute(ApiModel):
    """Send the Events with the chosen reasons to one receiver."""

    # CEL mirror of the validator below, so a real API server refuses this at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.provider == 'cloudevents' || (!has(self.hmacSecret) && !has(self.mode))",
                    "message": "hmacSecret and mode apply to the cloudevents provider only",
                }
            ]
        },
    )

    provider: NotificationProvider = Field(
        description="slack (incoming webhook), msteams (incoming webhook) or cloudevents (any HTTP receiver)."
    )
    reasons: list[EventReason] = Field(
        min_length=1, max_length=len(EventReason), description="Event reasons sent to this receiver."
    )
    url_secret: SecretKeyRef = Field(
        description="Secret key holding the webhook URL (URLs of Slack and Teams webhooks are credentials)."
    )
    hmac_secret: SecretKeyRef | None = Field(
        default=None,
        description="cloudevents: Secret key holding the HMAC-SHA256 key that signs each request body "
        "(header X-Mlcanary-Signature: sha256=<hex>).",
    )
    mode: CloudEventsMode | None = Field(
        default=None,
        description="cloudevents: structured (default; the event in the body) or binary (ce-* headers).",
    )

    @model_validator(mode="after")
    def _cloudevents_options(self) -> NotificationRoute:
        if self.provider != NotificationProvider.CLOUDEVENTS and (
            self.hmac_secret is not None or self.mode is not None
        ):
            raise ValueError("hmacSecret and mode apply to the cloudevents provider only")
        return self


# ------------------------------------------------------------------------------------ retraining
# spec.retraining: the operator requests training (a Job from the user's template, or a signed
# webhook); it never trains. Decisions are in mlcanary.retraining.core (pure).

MAX_RETRAIN_FOR = "168h"
MAX_RETRAIN_WINDOW = "24h"
MAX_RETRAIN_COOLDOWN = "720h"  # 30 days
MAX_RETRAIN_JOB_DEADLINE = "168h"
# Kubernetes CronJob schedules: five fields (robfig/cron's standard parser) or a descriptor.
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    r"[0-9A-Za-z*/,?-]+( [0-9A-Za-z*/,?-]+){4})$"
)
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"

RetrainFor = Annotated[
    str, _duration_field(MAX_RETRAIN_FOR, "0s"), AfterValidator(_duration_within("0s", MAX_RETRAIN_FOR))
]
RetrainWindow = Annotated[
    str,
    _duration_field(MAX_RETRAIN_WINDOW, "1m"),
    AfterValidator(_duration_within("1m", MAX_RETRAIN_WINDOW)),
]
RetrainCooldown = Annotated[
    str,
    _duration_field(MAX_RETRAIN_COOLDOWN, "1m"),
    AfterValidator(_duration_within("1m", MAX_RETRAIN_COOLDOWN)),
]
RetrainJobDeadline = Annotated[
    str,
    _duration_field(MAX_RETRAIN_JOB_DEADLINE, "1m"),
    AfterValidator(_duration_within("1m", MAX_RETRAIN_JOB_DEADLINE)),
]
RetrainJobTtl = Annotated[
    str,
    _duration_field(MAX_RETRAIN_JOB_DEADLINE, "0s"),
    AfterValidator(_duration_within("0s", MAX_RETRAIN_JOB_DEADLINE)),
]


def _valid_cron(schedule: str) -> str:
    if not croniter.is_valid(schedule):
        raise ValueError(f"{schedule!r} is not a cron schedule (five fields, e.g. '0 3 * * *', or @daily)")
    return schedule


def _valid_time_zone(zone: str) -> str:
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{zone!r} is not an IANA time zone (e.g. UTC, Europe/Paris)") from None
    return zone


class DriftTrigger(ApiModel):
    """Retrain when a drift PSI of the stable version stays above a threshold."""

    threshold: float = Field(
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="PSI above which the stable version counts as drifted (0.25 is a large shift).",
    )
    for_: RetrainFor = Field(
        default="1h",
        alias="for",
        description="How long the PSI must stay above the threshold, on every evaluation, before "
        "training is requested (0s-168h).",
    )


class AccuracyTrigger(ApiModel):
    """Retrain when the stable version's accuracy (from /feedback ground truth) falls below a floor."""

    threshold: float = Field(
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Accuracy (0-1) over retraining.window below which training is requested.",
    )
    for_: RetrainFor = Field(
        default="1h", alias="for", description="How long accuracy must stay below the threshold (0s-168h)."
    )
    min_samples: int = Field(
        default=100,
        ge=1,
        le=1_000_000_000,
        description="Feedback labels needed in the window for accuracy to count (fewer: no data).",
    )


class RetrainTriggers(ApiModel):
    """What requests training, judged on the stable version while no rollout is in flight."""

    input_drift: DriftTrigger | None = Field(
        default=None, description="Largest per-feature input PSI (mlcanary_input_drift_psi)."
    )
    prediction_drift: DriftTrigger | None = Field(
        default=None,
        description="PSI of the scores against the training distribution (mlcanary_prediction_drift_psi).",
    )
    accuracy_drop: AccuracyTrigger | None = Field(
        default=None, description="Accuracy from feedback labels (mlcanary_feedback_total)."
    )
    on_rollback: bool = Field(
        default=False,
        description="Also request training when a rollout is rolled back because an inputDrift, "
        "predictionDrift or accuracy analysis metric failed.",
    )


class RetrainJobTemplate(ApiModel):
    """The training Job's pod: one container (a subset of a batch/v1 Job, so every field is bounded
    and checked here). The operator adds env MODEL, STABLE_VERSION, REASON, WINDOW, METRIC_*."""

    image: str = Field(min_length=1, max_length=1024, description="Training image.")
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=64, description="Entrypoint (default: the image's)."
    )
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=64, description="Arguments."
    )
    env: list[EnvVar] | None = Field(default=None, max_length=64, description="Extra environment.")
    resources: Resources | None = Field(default=None, description="Container resources.")
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Service account the training pod runs as (e.g. one allowed to read logged data).",
    )
    annotations: dict[str, Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=16, description="Annotations of the Job (e.g. for a cost or queueing tool)."
    )
    backoff_limit: int = Field(default=0, ge=0, le=10, description="Retries of a failed pod (0-10).")
    active_deadline: RetrainJobDeadline = Field(
        default="6h", description="The Job fails when it runs longer than this (1m-168h)."
    )
    ttl_after_finished: RetrainJobTtl = Field(
        default="168h", description="A finished Job is deleted after this (0s-168h)."
    )

    @field_validator("annotations")
    @classmethod
    def _annotation_keys(cls, values: dict[str, str] | None) -> dict[str, str] | None:
        for key in values or {}:
            if len(key) > 317 or not re.fullmatch(LABEL_KEY_PATTERN, key):
                raise ValueError(f"{key!r} is not an annotation key")
        return values


class RetrainWebhook(ApiModel):
    """Request training by POSTing a CloudEvent 1.0 (structured JSON) to a pipeline's endpoint."""

    url_secret: SecretKeyRef = Field(description="Secret key holding the endpoint URL (a credential).")
    hmac_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the HMAC-SHA256 key signing the body (header "
        "X-Mlcanary-Signature: sha256=<hex>), as spec.notifications does.",
    )


class RetrainAction(enum.StrEnum):
    JOB = "Job"
    WEBHOOK = "Webhook"


class Retraining(ApiModel):
    """Request training of a new model version on a schedule and when the stable version drifts."""

    # CEL mirrors of the validator below, so a real API server refuses these at apply time.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.schedule) || has(self.jobTemplate)",
                    "message": "schedule needs jobTemplate (the CronJob runs it)",
                },
                {
                    "rule": "(has(self.action) && self.action == 'Webhook') ? has(self.webhook) : "
                    "has(self.jobTemplate)",
                    "message": "action Job needs jobTemplate; action Webhook needs webhook",
                },
            ]
        },
    )

    schedule: str | None = Field(
        default=None,
        max_length=128,
        pattern=CRON_PATTERN,
        description="Cron schedule (five fields, or @daily/@hourly/...) of an owned CronJob that runs "
        "jobTemplate. Besides any trigger.",
    )
    time_zone: str = Field(
        default="UTC",
        max_length=64,
        pattern=TIME_ZONE_PATTERN,
        description="IANA time zone of the schedule (CronJob spec.timeZone), e.g. Europe/Paris.",
    )
    action: RetrainAction = Field(
        default=RetrainAction.JOB,
        description="What a trigger does: Job (a Job from jobTemplate) or Webhook (a signed CloudEvent).",
    )
    job_template: RetrainJobTemplate | None = Field(
        default=None, description="The training Job (for action Job and for the schedule)."
    )
    webhook: RetrainWebhook | None = Field(default=None, description="The endpoint (for action Webhook).")
    triggers: RetrainTriggers = Field(
        default_factory=RetrainTriggers, description="Conditions that request training."
    )
    window: RetrainWindow = Field(
        default="1h",
        description="Window of the accuracy query, and the WINDOW the training run is told to retrain "
        "on (1m-24h).",
    )
    cooldown: RetrainCooldown = Field(
        default="6h",
        description="After a request, triggers are suppressed for this long (1m-720h); a manual "
        "request (annotation mlcanary.io/retrain) is not. One run at a time in any case.",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        return schedule if schedule is None else _valid_cron(schedule)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        return _valid_time_zone(zone)

    @model_validator(mode="after")
    def _action_has_its_target(self) -> Retraining:
        if self.schedule is not None and self.job_template is None:
            raise ValueError("schedule needs jobTemplate (the CronJob runs it)")
        if self.action == RetrainAction.JOB and self.job_template is None:
            raise ValueError("action Job needs jobTemplate; action Webhook needs webhook")
        if self.action == RetrainAction.WEBHOOK and self.webhook is None:
            raise ValueError("action Job needs jobTemplate; action Webhook needs webhook")
        return self


class ModelDeploymentSpec(ApiModel):
    """Desired state: which model version serves, and how a new version is rolled out and judged."""

    # CEL mirrors of _load_test_router and _shadow_needs_a_mirroring_router, so a real API server
    # refuses these at apply time (an omitted traffic is the replicas router).
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.loadTest) || (has(self.traffic) && !has(self.traffic.replicas))",
                    "message": "loadTest needs the gatewayAPI or istio router",
                },
                {
                    "rule": "!has(self.shadow) || (has(self.traffic) && !has(self.traffic.replicas))",
                    "message": "shadow: the replicas router cannot mirror requests; use gatewayAPI or istio",
                },
            ]
        },
    )

    model: ModelSource = Field(description="The model and version to serve.")
    serving: Serving = Field(default_factory=Serving, description="How serving pods run.")
    rollout: Rollout = Field(default_factory=Rollout, description="How traffic moves to a new version.")
    analysis: Analysis = Field(default_factory=Analysis, description="How each step is judged.")
    load_test: LoadTest | None = Field(
        default=None,
        description="A load test each new revision must pass before it receives any user traffic.",
    )
    traffic: Traffic = Field(
        default_factory=lambda: Traffic(replicas=ReplicaRouter()),
        description="How traffic is split (default: replica ratio).",
    )
    shadow: Shadow | None = Field(
        default=None,
        description="Mirror live prediction requests to each new version before any user traffic "
        "reaches it, and compare its answers with the stable's (gatewayAPI and istio routers only).",
    )
    notifications: list[NotificationRoute] = Field(
        default_factory=list,
        max_length=MAX_NOTIFICATION_ROUTES,
        description="Where Events are sent besides the Kubernetes API (delivered in the background: never "
        "delays a rollout).",
    )
    retraining: Retraining | None = Field(
        default=None,
        description="Request training of a new version on a schedule and when the stable version "
        "drifts (the operator requests, never trains).",
    )

    @model_validator(mode="after")
    def _shadow_needs_a_mirroring_router(self) -> ModelDeploymentSpec:
        if self.shadow is not None and self.traffic.router_kind.follows_ready_pods:
            raise ValueError(
                "shadow: the replicas router cannot mirror requests (a Service sends each request to "
                "one pod); use the gatewayAPI or istio router, or remove spec.shadow"
            )
        router = self.traffic.gateway_api or self.traffic.istio
        extra = (router.extra_rules or []) if router is not None and self.shadow is not None else []
        for index, rule in enumerate(extra):
            if rule.name == MIRROR_RULE:
                raise ValueError(
                    f"traffic.{self.traffic.router_kind}.extraRules[{index}].name: {MIRROR_RULE!r} is "
                    "reserved for the shadow phase's mirror rule"
                )
        if self.traffic.gateway_api is not None and len(extra) > MAX_HTTPROUTE_RULES - 2:
            raise ValueError(
                f"traffic.gatewayAPI.extraRules: at most {MAX_HTTPROUTE_RULES - 2} with spec.shadow (an "
                f"HTTPRoute holds {MAX_HTTPROUTE_RULES} rules: these, the mirror rule and the weighted rule)"
            )
        for index, metric in enumerate(self.analysis.metrics):
            if metric.builtin in SHADOW_BUILTINS:
                raise ValueError(
                    f"analysis.metrics[{index}].builtin: {metric.builtin} is measured in the shadow phase "
                    "only; set it under spec.shadow"
                )
        return self

    @model_validator(mode="after")
    def _steps_the_router_can_serve(self) -> ModelDeploymentSpec:
        """The replicas router can only give a canary whole pods: a step smaller than one pod's share
        would expose more than asked. Unset steps default to those of 5, 20, 50 it can serve."""
        if not self.traffic.router_kind.follows_ready_pods:
            return self
        replicas = self.serving.base_replicas
        if "steps" not in self.rollout.model_fields_set:
            fitting = [w for w in DEFAULT_STEPS if weights.realisable(replicas, w)]
            self.rollout.steps = fitting or [weights.smallest_step(replicas)]
            return self
        for index, weight in enumerate(self.rollout.steps):
            if not weights.realisable(replicas, weight):
                smallest = weights.smallest_step(replicas)
                raise ValueError(
                    f"rollout.steps[{index}]: {weight}% cannot be served by the replicas router with "
                    f"{self._replicas_field()} {replicas}: one canary pod beside {replicas} stable pods is "
                    f"{weights.served_share(replicas, 1)}%; use steps of at least {smallest}%, more "
                    "replicas, or the gatewayAPI or istio router"
                )
        return self

    @model_validator(mode="after")
    def _load_test_router(self) -> ModelDeploymentSpec:
        """Behind the replicas router a ready canary pod takes user traffic at once (the shared
        Service selects it): no phase can keep users off it, so a load test would not be first."""
        if self.load_test is not None and self.traffic.router_kind.follows_ready_pods:
            raise ValueError(
                "loadTest: loadTest needs the gatewayAPI or istio router: behind the replicas router "
                "a ready canary pod serves users at once, so the load test could not come first"
            )
        return self

    def _replicas_field(self) -> str:
        return "serving.autoscaling.minReplicas" if self.serving.autoscaling else "serving.replicas"

    def revision_template(self) -> RevisionTemplate:
        """What defines a revision: the model and how it is served (replica count and autoscaling
        excluded: changing how many pods run starts no canary)."""
        fields = self.serving.model_dump(exclude={"replicas", "autoscaling"})
        return RevisionTemplate(model=self.model.model_ref(), serving=ServingTemplate(replicas=1, **fields))


class RevisionTemplate(ApiModel):
    """Everything that makes a revision: changing any of it starts a canary."""

    model: ModelRef = Field(description="Model of this revision.")
    serving: ServingTemplate = Field(
        description="Serving settings of this revision (replicas not significant)."
    )

    def revision_hash(self) -> str:
        canonical = json.dumps(self.to_wire(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def revision_name(resource_name: str, template: RevisionTemplate) -> str:
    """Deterministic child name for a revision: ``<resource>-<version>-<hash>``, a DNS-1035 label.

    >>> revision_name("fraud", RevisionTemplate(model=ModelRef(name="f", version="2.1.0",
    ...     uri="file:///m"), serving=Serving()))[:14]
    'fraud-v2-1-0-f'
    """
    version = re.sub(r"[^a-z0-9]+", "-", template.model.version.lower()).strip("-")
    suffix = f"-v{version}-{template.revision_hash()}" if version else f"-{template.revision_hash()}"
    base = resource_name[: 63 - len(suffix)].rstrip("-")
    name = f"{base}{suffix}"
    if len(name) > 63:  # a very long version: keep the hash, drop the version text
        name = f"{resource_name[:54].rstrip('-')}-{template.revision_hash()}"
    if not name[0].isalpha():
        name = "r" + name[:62]
    return name


# ------------------------------------------------------------------------------------------- status


class Phase(enum.StrEnum):
    """Where a ModelDeployment is. Every transition is in :mod:`mlcanary.engine`."""

    INITIALIZING = "Initializing"  # first version: waiting for the stable revision to be ready
    HEALTHY = "Healthy"  # stable serves all traffic, nothing in flight
    PREPARING = "Preparing"  # canary created, waiting for it to be ready (weight 0)
    LOAD_TESTING = "LoadTesting"  # canary ready, load test Job running against it (weight 0)
    SHADOWING = "Shadowing"  # canary ready at weight 0, gets mirrored requests, compared with stable
    PROGRESSING = "Progressing"  # canary receives the current step's weight and is being judged
    PAUSED = "Paused"  # spec.rollout.paused: nothing advances
    PROMOTING = "Promoting"  # all traffic moving to the canary, then it becomes stable
    ROLLING_BACK = "RollingBack"  # traffic moving back to stable; canary removed after the delay
    ROLLED_BACK = "RolledBack"  # stable serves all traffic; the new version was rejected


class Verdict(enum.StrEnum):
    """Outcome of one metric check or one analysis round."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class Measurement(ApiModel):
    """One metric check of one analysis round."""

    metric: str = Field(description="Metric name.")
    verdict: Verdict = Field(description="Successful, Failed, Inconclusive or Error.")
    value: float | None = Field(default=None, description="Canary value (absent when there was none).")
    stable_value: float | None = Field(default=None, description="Stable value, for comparisons.")
    threshold: str | None = Field(default=None, description="The bound applied, as text.")
    sample_size: int | None = Field(default=None, description="Canary requests in the window.")
    message: str | None = Field(default=None, description="Why this verdict.")
    dry_run: bool | None = Field(default=None, description="Recorded only, not acted on.")
    time: datetime = Field(description="When it was measured.")


class StepReport(ApiModel):
    """The last analysis round of one step, for the canary report."""

    kind: Literal["shadow"] | None = Field(
        default=None, description="shadow for the shadow phase (step 0, weight 0); absent for a step."
    )
    step: int = Field(description="Step index, from 1 (0: the shadow phase).")
    weight: int = Field(description="Canary weight during the step.")
    verdict: Verdict | None = Field(default=None, description="Verdict of the step's last round.")
    rounds: int = Field(default=0, description="Analysis rounds run during the step.")
    measurements: list[Measurement] = Field(default_factory=list, description="Its measurements.")


class RolloutOutcome(enum.StrEnum):
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"


class RolloutEnding(ApiModel):
    """How a rollout that is ending will be recorded once the router confirms the traffic move."""

    outcome: RolloutOutcome = Field(description="Promoted, RolledBack or Superseded.")
    reason: str = Field(description="Why.")


class LoadTestPhase(enum.StrEnum):
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ABORTED = "Aborted"  # the rollout ended (abort, newer version) before a verdict


class LoadTestStatus(ApiModel):
    """The load test of one revision in the running rollout: kept in status so that an operator
    restart neither runs it again nor forgets its verdict."""

    revision: str = Field(description="Revision (child object) name the load test is for.")
    phase: LoadTestPhase = Field(description="Running, Passed, Failed, Inconclusive or Aborted.")
    job_name: str = Field(description="The Job that runs it.")
    started_at: datetime = Field(description="When the Job was requested.")
    finished_at: datetime | None = Field(default=None, description="When the verdict was reached.")
    requested_rps: float | None = Field(default=None, description="Requests per second asked for.")
    achieved_rps: float | None = Field(default=None, description="Requests per second measured.")
    requests: int | None = Field(default=None, description="Requests measured (after the warmup).")
    error_rate: float | None = Field(default=None, description="Share of failed requests.")
    latency_p95_seconds: float | None = Field(default=None, description="95th percentile latency.")
    latency_p99_seconds: float | None = Field(default=None, description="99th percentile latency.")
    message: str | None = Field(default=None, description="Why this verdict, naming value and bound.")


class RolloutRecord(ApiModel):
    """A finished rollout."""

    version: str = Field(description="Version that was rolled out.")
    from_version: str | None = Field(default=None, description="Stable version it started from.")
    outcome: RolloutOutcome = Field(description="Promoted, RolledBack or Superseded.")
    reason: str = Field(description="Why it ended so.")
    started_at: datetime | None = Field(default=None, description="When the canary was created.")
    finished_at: datetime = Field(description="When it ended.")
    steps: list[StepReport] = Field(default_factory=list, description="Per-step report.")
    load_test: LoadTestStatus | None = Field(default=None, description="The load test, when one ran.")


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="Condition type: Ready, Progressing, SpecValid.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(default=None, description="Generation this reflects.")


class RetiringRevision(ApiModel):
    """A revision that no longer gets traffic and is removed once scaleDownDelay has passed."""

    revision: str = Field(description="Revision (child object) name.")
    since: datetime = Field(description="When it stopped receiving traffic.")


class RevisionState(ApiModel):
    """A running revision: name and what it serves."""

    revision: str = Field(description="Revision (child object) name.")
    template: RevisionTemplate = Field(description="Model and serving settings of this revision.")


class AnalysisCounters(ApiModel):
    """Counters of the running rollout's analysis."""

    failures: int = Field(default=0, description="Failed rounds in this rollout.")
    consecutive_inconclusive: int = Field(default=0, description="Inconclusive rounds in a row.")
    consecutive_errors: int = Field(default=0, description="Errored rounds in a row.")
    step_successes: int = Field(default=0, description="Successful rounds in the current step.")
    step_rounds: int = Field(default=0, description="Rounds run in the current step.")
    last_round_at: datetime | None = Field(default=None, description="When the last round ran.")
    last_verdict: Verdict | None = Field(default=None, description="Verdict of the last round.")


class RetrainResult(enum.StrEnum):
    RUNNING = "Running"  # the Job runs
    REQUESTED = "Requested"  # the webhook accepted the request (what follows is the pipeline's)
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class RetrainingStatus(ApiModel):
    """Where retraining is (spec.retraining)."""

    last_trigger_time: datetime | None = Field(default=None, description="When training was last requested.")
    last_reason: str | None = Field(default=None, max_length=1024, description="Why it was requested.")
    last_run: str | None = Field(
        default=None, description="The run requested: the Job's name, or the CloudEvent id of a webhook."
    )
    last_result: RetrainResult | None = Field(
        default=None, description="Running, Requested, Succeeded or Failed."
    )
    last_values: dict[str, float] = Field(
        default_factory=dict, description="Trigger values when it was requested (inputDrift ...)."
    )
    version: str | None = Field(default=None, description="Stable version training was requested for.")
    next_scheduled_run: datetime | None = Field(default=None, description="Next run of the schedule.")
    suppressed_until: datetime | None = Field(
        default=None, description="Triggers firing before this are suppressed (cooldown)."
    )
    suppressed_for: str | None = Field(
        default=None, description="What the last RetrainSuppressed Event was about (one per run or cooldown)."
    )
    breaching_since: dict[str, datetime] = Field(
        default_factory=dict, description="Per trigger: since when its condition has held."
    )
    rollbacks_seen_until: datetime | None = Field(
        default=None, description="Rollbacks finished up to this time were considered (onRollback)."
    )
    handled_request: str | None = Field(
        default=None, description="Value of the mlcanary.io/retrain annotation already acted on."
    )
    requests: int = Field(default=0, description="Training runs requested so far.")


class ShadowPhase(enum.StrEnum):
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"


class ShadowStatus(ApiModel):
    """The shadow phase of one canary revision: kept by revision, so a restarted operator neither
    runs it again nor forgets it."""

    revision: str = Field(description="Canary revision it judges.")
    phase: ShadowPhase = Field(description="Running, Passed or Failed.")
    started_at: datetime = Field(description="When mirroring began (the duration counts from here).")
    finished_at: datetime | None = Field(default=None, description="When it passed or failed.")
    rounds: int = Field(default=0, description="Analysis rounds run.")
    verdict: Verdict | None = Field(default=None, description="Verdict of the last round.")
    message: str | None = Field(default=None, description="Why it passed or failed.")


MAX_REGISTRY_KNOWN_VERSIONS = 16


class RegistryStatus(ApiModel):
    """What the registry alias resolves to, and what the operator did about it."""

    alias: str | None = Field(default=None, description="The alias followed.")
    resolved_version: str | None = Field(
        default=None, description="MLflow model version number the alias points at."
    )
    resolved_model_version: str | None = Field(
        default=None, description="That version as a semantic version (see docs/registry.md)."
    )
    resolved_uri: str | None = Field(default=None, description="Where serving pods fetch that version.")
    pending_version: str | None = Field(
        default=None,
        description="Propose: the semantic version the alias points at while spec.model.version differs.",
    )
    applied_version: str | None = Field(
        default=None, description="Apply: the MLflow version number last written into spec.model."
    )
    last_poll_time: datetime | None = Field(default=None, description="When the alias was last resolved.")
    error: str | None = Field(default=None, description="Why the last resolution failed (no secret in it).")
    known_versions: dict[str, str] = Field(
        default_factory=dict,
        description="Semantic version -> MLflow version number of versions seen through the alias (the "
        "last few), so outcomes can be written back to the right model version.",
    )
    written_back: list[str] = Field(
        default_factory=list,
        description="Outcomes already written to the registry, as <version>/<outcome>/<finishedAt> (last few).",
    )


class ModelDeploymentStatus(ApiModel):
    """Observed state, written only by the operator."""

    observed_generation: int | None = Field(default=None, description="Last generation acted upon.")
    phase: Phase | None = Field(default=None, description="Where the rollout is.")
    message: str | None = Field(default=None, description="What is happening, in a sentence.")
    stable_version: str | None = Field(default=None, description="Version serving as stable.")
    canary_version: str | None = Field(default=None, description="Version under test, if any.")
    canary_weight: int = Field(default=0, description="Percent of traffic the canary should receive.")
    served_weight: float | None = Field(
        default=None,
        description="Percent of traffic the canary actually receives, as the router reads it back (for "
        "the replicas router: its share of ready pods). Never above canaryWeight for long: a higher "
        "share holds the rollout until the operator has restored the split.",
    )
    current_step: int | None = Field(default=None, description="Step index during a rollout, from 1.")
    step_started_at: datetime | None = Field(default=None, description="When the current step began.")
    canary_started_at: datetime | None = Field(default=None, description="When the canary was created.")
    phase_since: datetime | None = Field(default=None, description="When the phase was entered.")
    router_wait_since: datetime | None = Field(
        default=None, description="Since when the router has not confirmed the requested weight."
    )
    ending: RolloutEnding | None = Field(
        default=None, description="How the running rollout is ending (while Promoting or RollingBack)."
    )
    router_kind: RouterKind | None = Field(
        default=None, description="Router that carries the traffic (gatewayAPI, istio or replicas)."
    )
    stable: RevisionState | None = Field(default=None, description="The stable revision.")
    canary: RevisionState | None = Field(default=None, description="The canary revision.")
    retiring: list[RetiringRevision] = Field(
        default_factory=list, description="Revisions waiting to be removed."
    )
    analysis: AnalysisCounters = Field(
        default_factory=AnalysisCounters, description="Counters of the running rollout's analysis."
    )
    last_measurements: list[Measurement] = Field(
        default_factory=list, description="Measurements of the last analysis round."
    )
    steps: list[StepReport] = Field(
        default_factory=list,
        description="Report of the running rollout, one entry per step (and the shadow phase's, kind "
        "shadow).",
    )
    shadow: ShadowStatus | None = Field(
        default=None, description="The shadow phase of the current (or last) canary revision."
    )
    load_test: LoadTestStatus | None = Field(
        default=None, description="Load test of the running rollout's canary (spec.loadTest)."
    )
    history: list[RolloutRecord] = Field(default_factory=list, description="The last finished rollouts.")
    rejected_versions: list[str] = Field(
        default_factory=list,
        description="Versions rolled back: not started again until the retry annotation is set.",
    )
    handled_requests: dict[str, str] = Field(
        default_factory=dict,
        description="Value of each mlcanary.io/{promote,abort,retry} annotation already acted on.",
    )
    accepted_spec: str | None = Field(
        default=None,
        max_length=262144,
        description="The last spec that passed validation, as compact JSON (a string keeps the status "
        "small for every client that caches it). While the current spec is invalid nothing moves "
        "forward, but an abort or a rollback in flight still completes with this one.",
    )
    retraining: RetrainingStatus | None = Field(
        default=None, description="Where retraining is (spec.retraining)."
    )
    registry: RegistryStatus | None = Field(
        default=None, description="spec.model.registry: what the alias resolves to (absent without it)."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing, SpecValid, Reconciled."
    )


class ModelDeployment(ApiModel):
    """Top-level object (used for schema generation and for parsing whole objects)."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}", description="API version.")
    kind: str = Field(default=KIND, description="Kind.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired state.")
    status: ModelDeploymentStatus | None = Field(default=None, description="Observed state.")

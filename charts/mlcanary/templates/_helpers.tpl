{{/* Names and labels shared by every template. */}}

{{- define "mlcanary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlcanary.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlcanary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlcanary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlcanary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mlcanary.labels" -}}
helm.sh/chart: {{ include "mlcanary.chart" . }}
{{ include "mlcanary.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlcanary
{{- end }}

{{- define "mlcanary.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlcanary.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The serving series' namespace label: explicit, else the one the chart's PodMonitor produces. */}}
{{- define "mlcanary.namespaceLabel" -}}
{{- if .Values.prometheus.namespaceLabel }}
{{- .Values.prometheus.namespaceLabel }}
{{- else if .Values.monitoring.serving.podMonitor.enabled }}
{{- "namespace" }}
{{- end }}
{{- end }}

{{- define "mlcanary.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
What the operator does in each watched namespace. Listed verb by verb: no "*" anywhere, and no verb
the operator does not use (tests/integration/test_chart_rbac.py runs it under exactly these rules and
compares what it used). Kopf lists/watches/patches ModelDeployments (finalizer, bookkeeping
annotations); the operator patches their status, owns the serving Deployments and Services and the
router objects (read from informers, written by create/patch/delete; get only to re-read an object a
create found existing), creates core Events and reads (get only) the Secrets a ModelDeployment names
for Prometheus credentials. Nothing is ever written with update (PUT).
*/}}
{{- define "mlcanary.namespacedRules" -}}
- apiGroups: ["mlcanary.io"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["mlcanary.io"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Load test results: the generator pod's termination message, read from a label-selected list.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.rbac.readSecrets }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rbac.routers.gatewayAPI }}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.routers.istio }}
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- end }}

{{/* The chart's name, or nameOverride. */}}
{{- define "daemonpool-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* RELEASE-NAME (or the release name alone when it contains the name), or fullnameOverride. */}}
{{- define "daemonpool-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "daemonpool-operator.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's image: by digest when one is given, else by tag (default: the chart's appVersion). */}}
{{- define "daemonpool-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: never change across upgrades (a Deployment's selector is immutable). */}}
{{- define "daemonpool-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "daemonpool-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* All labels: selector labels plus what may change with each release. */}}
{{- define "daemonpool-operator.labels" -}}
{{ include "daemonpool-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: daemonpool
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "daemonpool-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "daemonpool-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs, each with its reason. */}}
{{- define "daemonpool-operator.rules" -}}
# The pools: watch them; patch only removes the finalizer an older version put there (kopf writes nothing).
- apiGroups: ["daemonpool.dev"]
  resources: ["daemonpools"]
  verbs: ["get", "list", "watch", "patch"]
# The pools' status, rebuilt by the operator on every change.
- apiGroups: ["daemonpool.dev"]
  resources: ["daemonpools/status"]
  verbs: ["patch"]
# The workers' Deployments: create, read, and patch back to the desired state (drift).
# No delete: garbage collection removes them through the ownerReference.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The workers' pods: readiness and restarts for the status; patch only to set
# controller.kubernetes.io/pod-deletion-cost before a scale-in (idle workers go first).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
# The pools' PodDisruptionBudgets (spec.disruption): listed once at start, made, kept, and deleted when
# spec.disruption is removed (garbage collection removes them with the pool).
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "create", "patch", "delete"]
# HorizontalPodAutoscalers, listed every 30 s: one that targets an autoscaled pool is a conflict to report.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list"]
# Events on the pools (Created, Scaled, InvalidSpec, WorkerRestarted, ...).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

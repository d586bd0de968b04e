{{/*
Chart name, overridable; 63 characters is the limit of a DNS label.
*/}}
{{- define "mobilenet-serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. A release already named after the chart is not
repeated ("mobilenet-serve", not "mobilenet-serve-mobilenet-serve").
*/}}
{{- define "mobilenet-serve.fullname" -}}
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

{{- define "mobilenet-serve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mobilenet-serve.labels" -}}
helm.sh/chart: {{ include "mobilenet-serve.chart" . }}
{{ include "mobilenet-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ include "mobilenet-serve.imageTag" . | quote }}
app.kubernetes.io/component: inference
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels must never change between upgrades: a Deployment's selector
is immutable.
*/}}
{{- define "mobilenet-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mobilenet-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mobilenet-serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mobilenet-serve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mobilenet-serve.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "mobilenet-serve.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "mobilenet-serve.imageTag" .) }}
{{- end }}

{{/*
The service's config file. Empty `models` and `default_model` are dropped so
that the service's own defaults (every variant; its default model) apply.
*/}}
{{- define "mobilenet-serve.configFile" -}}
{{- $config := deepCopy .Values.config }}
{{- if not $config.models }}
{{- $_ := unset $config "models" }}
{{- end }}
{{- if not $config.default_model }}
{{- $_ := unset $config "default_model" }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
The kubelet may SIGKILL only after the preStop pause and the server's whole
drain time have passed.
*/}}
{{- define "mobilenet-serve.terminationGracePeriodSeconds" -}}
{{- add .Values.shutdown.preStopSleepSeconds .Values.config.shutdown_grace_seconds .Values.shutdown.extraGraceSeconds }}
{{- end }}

{{/*
PromQL label matchers for this release's series. With a ServiceMonitor the
Prometheus Operator sets job to the Service's name.
*/}}
{{- define "mobilenet-serve.promSelector" -}}
namespace="{{ .Release.Namespace }}", job="{{ include "mobilenet-serve.fullname" . }}"
{{- end }}

{{/*
The load query KEDA scales on: the release's total, which KEDA divides by the
per-pod target.
*/}}
{{- define "mobilenet-serve.kedaQuery" -}}
{{- $selector := include "mobilenet-serve.promSelector" . }}
{{- if eq .Values.autoscaling.loadMetric.metric "queueDepth" }}
{{- printf "sum(mobilenet_queue_depth{%s})" $selector }}
{{- else }}
{{- printf "sum(rate(mobilenet_requests_total{%s}[2m]))" $selector }}
{{- end }}
{{- end }}

{{/*
Queue saturation per model, each against its own max_queue_size: one clause
per model with a batching override, one for every other model.
*/}}
{{- define "mobilenet-serve.queueSaturationExpr" -}}
{{- $selector := include "mobilenet-serve.promSelector" . }}
{{- $threshold := .Values.monitoring.prometheusRule.queueSaturation }}
{{- $others := list $selector }}
{{- range $model, $batching := .Values.config.batching }}
{{- if hasKey $batching "max_queue_size" }}
{{- $others = append $others (printf "model!=%q" $model) }}
max by (namespace, pod, model) (mobilenet_queue_depth{ {{- $selector }}, model="{{ $model }}"}) / {{ $batching.max_queue_size }} > {{ $threshold }}
or
{{- end }}
{{- end }}
max by (namespace, pod, model) (mobilenet_queue_depth{ {{- join ", " $others }}}) / {{ .Values.config.default_batching.max_queue_size }} > {{ $threshold }}
{{- end }}

{{/*
The server container's resources. With qos.guaranteed the requests are the
limits, so the pod is in the Guaranteed QoS class; with an integer CPU count
the kubelet's static CPU manager then gives it whole cores, which
config.pin_instances needs to pin each instance to its own core.
*/}}
{{- define "mobilenet-serve.resources" -}}
{{- if .Values.qos.guaranteed }}
{{- $limits := required "qos.guaranteed needs resources.limits" .Values.resources.limits }}
{{- if not (regexMatch "^[1-9][0-9]*$" (toString (required "qos.guaranteed needs resources.limits.cpu" $limits.cpu))) }}
{{- fail "qos.guaranteed needs a whole number of CPUs in resources.limits.cpu (e.g. \"2\"), for the static CPU manager to give whole cores" }}
{{- end }}
{{- toYaml (dict "requests" $limits "limits" $limits) }}
{{- else }}
{{- toYaml .Values.resources }}
{{- end }}
{{- end }}

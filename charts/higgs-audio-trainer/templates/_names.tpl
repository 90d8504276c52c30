{{/*
Names, labels, the image and the kind of job: pure helpers, no checks (those are in _validate.tpl).
Every name is cut to 63 characters, the limit of a DNS label and of a label value.
*/}}

{{/* Chart name, or nameOverride. */}}
{{- define "higgs-audio-trainer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name except the PyTorchJob: the release name, followed by the chart name
unless the release name already contains it. Objects with a suffix take their names from componentName.
*/}}
{{- define "higgs-audio-trainer.fullname" -}}
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

{{/*
Name of an object of the release: the fullname and "-<suffix>", the fullname cut so that the name stays
within 63 characters with the suffix whole (a cut suffix could make two names equal), and never past 52
characters, where earlier versions of the chart cut it: an upgrade must keep the output claim's name, or
it would leave the claim that holds the checkpoints behind. Argument: (list <chart context> <suffix>).
*/}}
{{- define "higgs-audio-trainer.componentName" -}}
{{- $suffix := index . 1 }}
{{- $prefix := include "higgs-audio-trainer.fullname" (index . 0) | trunc (int (min 52 (sub 62 (len $suffix)))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $suffix }}
{{- end }}

{{/*
Name of the job: jobName, else the release name. The operator names pods and services
"<job>-worker-<index>", and a service name is a DNS-1035 label of at most 63 characters, so the job
name is a DNS-1035 label of at most 50 (workers stay below 1000). values.schema.json checks jobName;
a name taken from the release is checked in _validate.tpl, since the schema cannot see it.
*/}}
{{- define "higgs-audio-trainer.jobName" -}}
{{- .Values.jobName | default (.Release.Name | trunc 50 | trimSuffix "-") }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "higgs-audio-trainer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "higgs-audio-trainer.labels" -}}
helm.sh/chart: {{ include "higgs-audio-trainer.chart" . }}
{{ include "higgs-audio-trainer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: higgs-audio-trainer
{{- end }}

{{/* Labels that select this release's pods; never change them after release, selectors are immutable. */}}
{{- define "higgs-audio-trainer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "higgs-audio-trainer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Claim the trainer writes to: an existing one, or the one this chart creates. */}}
{{- define "higgs-audio-trainer.outputClaimName" -}}
{{- .Values.storage.output.existingClaim | default (include "higgs-audio-trainer.componentName" (list . "output")) }}
{{- end }}

{{/*
Name of the Pushgateway this chart creates, its Deployment, Service and ServiceMonitor; the Service name is
also its in-cluster address, so it must be a DNS-1035 label, which _validate.tpl checks. Helm allows
release names that are not (a leading digit, dots): with jobName set they get this far.
*/}}
{{- define "higgs-audio-trainer.pushgatewayName" -}}
{{- include "higgs-audio-trainer.componentName" (list . "pushgateway") }}
{{- end }}

{{/* The trainer pods' service account: serviceAccount.name, else the full name when the chart creates it,
else empty (the namespace's default). */}}
{{- define "higgs-audio-trainer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "higgs-audio-trainer.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: a digest wins over a tag; the tag defaults to the chart's appVersion. */}}
{{- define "higgs-audio-trainer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Kind of the job: PyTorchJob (Kubeflow Training Operator v1) or TrainJob (Kubeflow Trainer v2). The one
place that defaults it: every template asks here.
*/}}
{{- define "higgs-audio-trainer.kind" -}}
{{- .Values.kind | default "PyTorchJob" }}
{{- end }}

{{/*
Name of the trainer container: the v1 operator looks for `pytorch`, the v2 torch plugin for `node`.
*/}}
{{- define "higgs-audio-trainer.containerName" -}}
{{- ternary "node" "pytorch" (eq (include "higgs-audio-trainer.kind" .) "TrainJob") }}
{{- end }}

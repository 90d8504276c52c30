{{/*
The trainer's options, environment and process counts: what the chart sets, derived from its values. The checks of those
values are in _validate.tpl.
*/}}

{{/* torchrun --nproc_per_node: nprocPerNode, else one process per GPU, else 1. */}}
{{- define "higgs-audio-trainer.nprocPerNode" -}}
{{- if .Values.nprocPerNode }}
{{- .Values.nprocPerNode }}
{{- else if gt (int .Values.gpu.count) 0 }}
{{- .Values.gpu.count }}
{{- else }}
{{- "1" }}
{{- end }}
{{- end }}

{{/*
An elastic PyTorchJob's replica range, as YAML {min, max}: elastic.minReplicas and elastic.maxReplicas,
each defaulting to workers.
*/}}
{{- define "higgs-audio-trainer.elasticReplicas" -}}
{{- $workers := int .Values.workers }}
min: {{ .Values.elastic.minReplicas | default $workers | int }}
max: {{ .Values.elastic.maxReplicas | default $workers | int }}
{{- end }}

{{/*
Trainer option values as env var text, the way the trainer parses them: booleans as true/false,
lists comma-separated, whole numbers without exponent. Helm reads every number in a values file as a
float64, so 1000000 would otherwise print as 1e+06, which the trainer rejects for an integer option.
*/}}
{{- define "higgs-audio-trainer.envValue" -}}
{{- if kindIs "bool" . }}
{{- ternary "true" "false" . }}
{{- else if kindIs "slice" . }}
{{- join "," . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- $f := float64 . }}
{{- if and (eq $f (floor $f)) (lt $f 1e15) (gt $f -1e15) }}
{{- int64 $f }}
{{- else }}
{{- $f }}
{{- end }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/*
The trainer options this chart sets, as a YAML map of option name -> value: the `trainer` values that
are not null, plus the options the chart derives from its other values unless `trainer` or
`trainerFromSecret` sets them. A derived option is set only when the trainer declares it (the list in
_trainer-options.tpl, generated from trainer/config/values.py), so the chart never sets a variable the
trainer does not read.
*/}}
{{- define "higgs-audio-trainer.trainerOptions" -}}
{{- $known := include "higgs-audio-trainer.trainerOptionNames" . | splitList " " }}
{{- $fromSecret := .Values.trainerFromSecret | default dict }}
{{- $opts := dict }}
{{- range $name, $value := .Values.trainer }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $opts $name $value }}
{{- end }}
{{- end }}
{{- $job := include "higgs-audio-trainer.jobName" . }}
{{- $mount := .Values.storage.output.mountPath | trimSuffix "/" }}
{{- $derived := dict "output_dir" (printf "%s/%s" $mount $job) "run_name" $job }}
{{- $_ := set $derived "job_name" $job }}
{{- $_ := set $derived "job_kind" (include "higgs-audio-trainer.kind" .) }}
{{- $_ := set $derived "events" .Values.events.enabled }}
{{- if .Values.metrics.pushgateway.create }}
{{- $_ := set $derived "pushgateway_url" (printf "http://%s:9091" (include "higgs-audio-trainer.pushgatewayName" .)) }}
{{- end }}
{{- if .Values.metrics.podMonitor.enabled }}
{{- $_ := set $derived "metrics_port" .Values.metrics.podMonitor.port }}
{{- end }}
{{- /* The grace period less the launcher's 20 seconds to collect the ranks' reasons and exit. */}}
{{- $_ := set $derived "signal_save_timeout_seconds" (sub (int .Values.terminationGracePeriodSeconds) 20) }}
{{- range $name, $value := $derived }}
{{- if and (has $name $known) (not (hasKey $opts $name)) (not (hasKey $fromSecret $name)) }}
{{- $_ := set $opts $name $value }}
{{- end }}
{{- end }}
{{- toYaml $opts }}
{{- end }}

{{/*
The trainer container's env: trainer options, the namespace for metrics_namespace (downward API, so
runs of the same name in two namespaces push apart), options from Secrets, HOME, the HF token, extraEnv.
*/}}
{{- define "higgs-audio-trainer.env" -}}
{{- $known := include "higgs-audio-trainer.trainerOptionNames" . | splitList " " }}
{{- $opts := include "higgs-audio-trainer.trainerOptions" . | fromYaml }}
{{- range $name := keys $opts | sortAlpha }}
- name: {{ upper $name }}
  value: {{ include "higgs-audio-trainer.envValue" (get $opts $name) | quote }}
{{- end }}
{{- if and (has "metrics_namespace" $known) (not (hasKey $opts "metrics_namespace")) (not (hasKey (.Values.trainerFromSecret | default dict) "metrics_namespace")) }}
- name: METRICS_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
{{- if and (has "job_namespace" $known) (not (hasKey $opts "job_namespace")) (not (hasKey (.Values.trainerFromSecret | default dict) "job_namespace")) }}
- name: JOB_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
{{- range $name := keys (.Values.trainerFromSecret | default dict) | sortAlpha }}
{{- $ref := get $.Values.trainerFromSecret $name }}
- name: {{ upper $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name | quote }}
      key: {{ $ref.key | quote }}
{{- end }}
# The root filesystem is read-only: caches that default to $HOME (Hugging Face, datasets, Triton)
# go to the /tmp volume instead.
- name: HOME
  value: /tmp
{{- $nproc := include "higgs-audio-trainer.nprocPerNode" . }}
{{- if and (eq (include "higgs-audio-trainer.kind" .) "TrainJob") (not (regexMatch "^[0-9]+$" $nproc)) }}
# A TrainJob's numProcPerNode takes numbers only: the launcher reads the word from here.
- name: NPROC_PER_NODE
  value: {{ $nproc | quote }}
{{- end }}
{{- with .Values.hfToken.secretName }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.hfToken.secretKey | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

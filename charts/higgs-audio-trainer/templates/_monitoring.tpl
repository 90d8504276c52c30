{{/*
Helpers of the monitoring objects (ServiceMonitor, PodMonitor, PrometheusRule, the Pushgateway).
*/}}

{{/* "true" when the cluster (or helm template --api-versions) serves the Prometheus Operator's API. */}}
{{- define "higgs-audio-trainer.operatorServed" -}}
{{- $api := .Capabilities.APIVersions }}
{{- if or ($api.Has "monitoring.coreos.com/v1") ($api.Has "monitoring.coreos.com/v1/ServiceMonitor") ($api.Has "monitoring.coreos.com/v1/PrometheusRule") }}true{{ end }}
{{- end }}

{{/*
"true" when an operator object is on: its value is true, or "auto" and the operator's API is served.
Argument: (list <chart context> <value>).
*/}}
{{- define "higgs-audio-trainer.operatorObjectOn" -}}
{{- $root := index . 0 }}
{{- $value := index . 1 }}
{{- if or (eq (toString $value) "true") (and (eq (toString $value) "auto") (include "higgs-audio-trainer.operatorServed" $root)) }}true{{ end }}
{{- end }}

{{/* Whether the chart's ServiceMonitor renders: on, and there is a chart Pushgateway to scrape. */}}
{{- define "higgs-audio-trainer.serviceMonitorOn" -}}
{{- if and .Values.metrics.pushgateway.create (include "higgs-audio-trainer.operatorObjectOn" (list . .Values.metrics.pushgateway.serviceMonitor.enabled)) }}true{{ end }}
{{- end }}

{{/*
Labels of a monitor or rule: the chart's, the component, monitoring.releaseLabel's `release`, then the
object's own labels (which may override `release`). Argument: (list <chart context> <component> <labels>).
*/}}
{{- define "higgs-audio-trainer.monitoringLabels" -}}
{{- $root := index . 0 }}
{{- $labels := dict "app.kubernetes.io/component" (index . 1) }}
{{- with ($root.Values.monitoring | default dict).releaseLabel }}
{{- $_ := set $labels "release" . }}
{{- end }}
{{- $labels = merge (deepCopy (index . 2 | default dict)) $labels }}
{{- include "higgs-audio-trainer.labels" $root }}
{{ toYaml $labels }}
{{- end }}

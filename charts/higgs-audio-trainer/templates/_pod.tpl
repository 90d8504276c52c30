{{/*
The pod template shared by the replicas of both kinds of job: volumes, mounts, resources, the preflight's
settings. The checks of these values are in _validate.tpl.
*/}}

{{/* Volumes the trainer mounts at its model, data and output paths, plus /dev/shm and /tmp. */}}
{{- define "higgs-audio-trainer.volumes" -}}
- name: output
  persistentVolumeClaim:
    claimName: {{ include "higgs-audio-trainer.outputClaimName" . }}
{{- with .Values.storage.model.claimName }}
- name: model
  persistentVolumeClaim:
    claimName: {{ . }}
    readOnly: true
{{- end }}
{{- with .Values.storage.data.claimName }}
- name: data
  persistentVolumeClaim:
    claimName: {{ . }}
    readOnly: true
{{- end }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.storage.shm.sizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.storage.tmp.sizeLimit }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Mounts of the volumes above; `output` is left out for pods that only read (the helm test). */}}
{{- define "higgs-audio-trainer.volumeMounts" -}}
{{- $root := .root }}
{{- if .output }}
- name: output
  mountPath: {{ $root.Values.storage.output.mountPath }}
{{- end }}
{{- with $root.Values.storage.model }}
{{- if .claimName }}
- name: model
  mountPath: {{ .mountPath }}
  readOnly: true
  {{- with .subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}
{{- end }}
{{- with $root.Values.storage.data }}
{{- if .claimName }}
- name: data
  mountPath: {{ .mountPath }}
  readOnly: true
  {{- with .subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}
{{- end }}
- name: tmp
  mountPath: /tmp
{{- with $root.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
CPU and memory from resources, plus gpu.count of gpu.resourceName as request and limit. (Helm merges a
user's `resources` with the chart's; _validate.tpl refuses a request left above the default limit.)
*/}}
{{- define "higgs-audio-trainer.resources" -}}
{{- $res := deepCopy (.Values.resources | default dict) }}
{{- if gt (int .Values.gpu.count) 0 }}
{{- $limits := $res.limits | default dict }}
{{- $requests := $res.requests | default dict }}
{{- $_ := set $limits .Values.gpu.resourceName (int .Values.gpu.count) }}
{{- $_ := set $requests .Values.gpu.resourceName (int .Values.gpu.count) }}
{{- $_ := set $res "limits" $limits }}
{{- $_ := set $res "requests" $requests }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/*
The preflight's settings for the launcher, which runs `higgs-audio-trainer preflight`'s checks in the trainer
container before torchrun starts (output volume, /dev/shm, the GPUs of gpu.count, inputs, Pushgateway). Not
an init container: the training operator reads only the trainer container's exit code, and recreated a pod
whose init container failed again and again with no record of why; the launcher's exit code 2 fails the job
for good, and its termination message and a PreflightFailed Event say which check failed.
*/}}
{{- define "higgs-audio-trainer.preflightEnv" -}}
{{- if .Values.preflight.enabled }}
- name: PREFLIGHT
  value: "true"
- name: PREFLIGHT_EXPECT_GPUS
  value: {{ int .Values.gpu.count | quote }}
- name: PREFLIGHT_MIN_SHM
  value: {{ .Values.preflight.minShm | quote }}
{{- with .Values.preflight.minFreeSpace }}
- name: PREFLIGHT_MIN_FREE_SPACE
  value: {{ . | quote }}
{{- end }}
- name: PREFLIGHT_GATEWAY_TIMEOUT_SECONDS
  value: {{ include "higgs-audio-trainer.envValue" .Values.preflight.gatewayTimeoutSeconds | quote }}
{{- end }}
{{- end }}

{{/*
Pod template of a replica, for both kinds. Arguments: root (the chart context) and metrics (whether this
replica declares the `metrics` port: the pod where rank 0 runs, which alone serves /metrics).
*/}}
{{- define "higgs-audio-trainer.podTemplate" -}}
{{- $root := .root }}
{{- $v2 := eq (include "higgs-audio-trainer.kind" $root) "TrainJob" }}
{{- with $root }}
metadata:
  labels:
    {{- include "higgs-audio-trainer.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/component: trainer
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $annotations := deepCopy (.Values.podAnnotations | default dict) }}
  {{- if .Values.disableIstioSidecar }}
  {{- /* Istio's sidecar intercepts the rendezvous and NCCL ports and outlives the trainer container. */}}
  {{- $_ := set $annotations "sidecar.istio.io/inject" "false" }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if $v2 }}
  {{- /* A JobSet's pods belong to batch Jobs: Never, or OnFailure (restarts in place). */}}
  restartPolicy: {{ ternary "OnFailure" "Never" (eq .Values.restartPolicy "OnFailure") }}
  {{- end }}
  {{- with include "higgs-audio-trainer.serviceAccountName" . }}
  serviceAccountName: {{ . }}
  {{- end }}
  # The token is there only for the job's Events (events.enabled); otherwise the trainer never calls the API.
  automountServiceAccountToken: {{ .Values.events.enabled }}
  # Service links would add *_PORT/*_HOST variables for every service in the namespace.
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with .Values.schedulerName }}
  schedulerName: {{ . }}
  {{- end }}
  {{- if .Values.hostNetwork }}
  hostNetwork: true
  {{- end }}
  {{- with .Values.dnsPolicy }}
  dnsPolicy: {{ . }}
  {{- end }}
  {{- with .Values.initContainers }}
  initContainers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ include "higgs-audio-trainer.containerName" . }}
      image: {{ include "higgs-audio-trainer.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- with .Values.command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.args }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if or (not $v2) (and $.metrics .Values.metrics.podMonitor.enabled) }}
      ports:
        {{- if not $v2 }}
        # The operator reads MASTER_PORT from the port of this name. Under a TrainJob the torch plugin
        # adds its own port (29400) and sets PET_MASTER_PORT to it.
        - name: pytorchjob-port
          containerPort: 23456
          protocol: TCP
        {{- end }}
        {{- if and $.metrics .Values.metrics.podMonitor.enabled }}
        - name: metrics
          containerPort: {{ .Values.metrics.podMonitor.port }}
          protocol: TCP
        {{- end }}
      {{- end }}
      env:
        {{- with include "higgs-audio-trainer.preflightEnv" . | trim }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- include "higgs-audio-trainer.env" . | trim | nindent 8 }}
      resources:
        {{- include "higgs-audio-trainer.resources" . | trim | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "higgs-audio-trainer.volumeMounts" (dict "root" . "output" true) | trim | nindent 8 }}
        # NCCL and the data loader workers share memory through /dev/shm, 64 MiB by default.
        - name: dshm
          mountPath: /dev/shm
    {{- with .Values.extraContainers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumes:
    {{- include "higgs-audio-trainer.volumes" . | trim | nindent 4 }}
{{- end }}
{{- end }}

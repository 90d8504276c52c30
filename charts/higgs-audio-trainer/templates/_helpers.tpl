{{/*
Names, labels and the pod template shared by the Master and Worker replicas.
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
Name of the PyTorchJob: jobName, else the release name. The operator names pods and services
"<job>-worker-<index>", and a service name is a DNS-1035 label of at most 63 characters, so the job
name is a DNS-1035 label of at most 50 (workers stay below 1000). values.schema.json checks jobName;
a name taken from the release is checked here, since the schema cannot see it.
*/}}
{{- define "higgs-audio-trainer.jobName" -}}
{{- $name := .Values.jobName | default (.Release.Name | trunc 50 | trimSuffix "-") }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "jobName: %q (taken from the release name when jobName is empty) is not a DNS-1035 label: lower-case letters, digits and '-', starting with a letter; set jobName" $name) }}
{{- end }}
{{- $name }}
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
also its in-cluster address, so it must be a DNS-1035 label. Helm allows release names that are not (a
leading digit, dots): with jobName set they get this far.
*/}}
{{- define "higgs-audio-trainer.pushgatewayName" -}}
{{- $name := include "higgs-audio-trainer.componentName" (list . "pushgateway") }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "fullnameOverride: the Pushgateway's Service name %q (from the release name, or fullnameOverride) is not a DNS-1035 label: lower-case letters, digits and '-', starting with a letter; set fullnameOverride" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* Image reference: a digest wins over a tag; the tag defaults to the chart's appVersion. */}}
{{/* The trainer pods' service account: serviceAccount.name, else the full name when the chart creates it,
else empty (the namespace's default). */}}
{{- define "higgs-audio-trainer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "higgs-audio-trainer.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "higgs-audio-trainer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

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
{{- if hasKey $fromSecret $name }}
{{- fail (printf "trainer.%s: also set in trainerFromSecret; keep one of them" $name) }}
{{- end }}
{{- if eq $name "pushgateway_password" }}
{{- fail "trainer.pushgateway_password: a password is never rendered into the pod spec as a plain value (anyone who can read the job could read it); put it in a Secret and set trainerFromSecret.pushgateway_password: {name: <secret>, key: <key>}" }}
{{- end }}
{{- $_ := set $opts $name $value }}
{{- end }}
{{- end }}
{{- $job := include "higgs-audio-trainer.jobName" . }}
{{- $mount := .Values.storage.output.mountPath | trimSuffix "/" }}
{{- $derived := dict "output_dir" (printf "%s/%s" $mount $job) "run_name" $job }}
{{- $_ := set $derived "job_name" $job }}
{{- $_ := set $derived "job_kind" (.Values.kind | default "PyTorchJob") }}
{{- $_ := set $derived "events" .Values.events.enabled }}
{{- if .Values.metrics.pushgateway.create }}
{{- $_ := set $derived "pushgateway_url" (printf "http://%s:9091" (include "higgs-audio-trainer.pushgatewayName" .)) }}
{{- end }}
{{- if .Values.metrics.podMonitor.enabled }}
{{- $_ := set $derived "metrics_port" .Values.metrics.podMonitor.port }}
{{- end }}
{{- /* The grace period less the launcher's 20 seconds to collect the ranks' reasons and exit. */}}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $_ := set $derived "signal_save_timeout_seconds" (sub $grace 20) }}
{{- $timeoutDerived := not (or (hasKey $opts "signal_save_timeout_seconds") (hasKey $fromSecret "signal_save_timeout_seconds")) }}
{{- range $name, $value := $derived }}
{{- if and (has $name $known) (not (hasKey $opts $name)) (not (hasKey $fromSecret $name)) }}
{{- $_ := set $opts $name $value }}
{{- end }}
{{- end }}
{{- with $opts.output_dir }}
{{- if not (or (eq . $mount) (hasPrefix (printf "%s/" $mount) .)) }}
{{- fail (printf "trainer.output_dir: %q is not under storage.output.mountPath %q; checkpoints and adapters must land on the output volume, the only one that outlives the pods" . $mount) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.podMonitor.enabled (hasKey $opts "metrics_port") }}
{{- if ne (include "higgs-audio-trainer.envValue" $opts.metrics_port) (include "higgs-audio-trainer.envValue" .Values.metrics.podMonitor.port) }}
{{- fail (printf "trainer.metrics_port: %v differs from metrics.podMonitor.port %v, the port the PodMonitor scrapes; set only metrics.podMonitor.port" $opts.metrics_port .Values.metrics.podMonitor.port) }}
{{- end }}
{{- end }}
{{- /* values.schema.json holds the same floor; this is for --skip-schema-validation. */}}
{{- if and $timeoutDerived (has "signal_save_timeout_seconds" $known) (lt $grace 30) }}
{{- fail (printf "terminationGracePeriodSeconds: %v is too short: on SIGTERM the trainer gets it minus 20 seconds (trainer.signal_save_timeout_seconds, derived from it) to finish its step and save a checkpoint; set at least 30" $grace) }}
{{- end }}
{{- with $opts.signal_save_timeout_seconds }}
{{- if ge (float64 .) (float64 $grace) }}
{{- fail (printf "trainer.signal_save_timeout_seconds: %v must be below terminationGracePeriodSeconds %v, or the kubelet's SIGKILL cuts the checkpoint short before the trainer can say why; leave it null to derive it" . $grace) }}
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
{{- range .Values.extraEnv }}
{{- if has (lower .name) $known }}
{{- fail (printf "extraEnv: %s is a trainer option; set trainer.%s instead, where the schema checks it" .name (lower .name)) }}
{{- end }}
{{- if and (eq (include "higgs-audio-trainer.kind" $) "TrainJob") (has .name (list "PET_NNODES" "PET_NPROC_PER_NODE" "PET_NODE_RANK" "PET_MASTER_ADDR" "PET_MASTER_PORT")) }}
{{- fail (printf "extraEnv: %s is set by Kubeflow Trainer's torch plugin under kind TrainJob, and its webhook refuses a TrainJob that sets it; use workers and nprocPerNode" .name) }}
{{- end }}
{{- if has .name (list "HF_TOKEN" "HOME") }}
{{- fail (printf "extraEnv: the chart sets %s itself (HF_TOKEN from hfToken.secretName, HOME for the read-only root filesystem)" .name) }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

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
A resource quantity (8, 500m, 64Gi, 1.5G) as a plain number, or "" for a form not handled here
(exponents), which then goes unchecked.
*/}}
{{- define "higgs-audio-trainer.quantityValue" -}}
{{- $q := toString . }}
{{- $number := regexFind "^[0-9]*\\.?[0-9]+" $q }}
{{- $scale := dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 }}
{{- $suffix := trimPrefix $number $q }}
{{- if and $number (hasKey $scale $suffix) }}
{{- mulf (float64 $number) (get $scale $suffix) }}
{{- end }}
{{- end }}

{{/*
CPU and memory from resources, plus gpu.count of gpu.resourceName as request and limit. Helm merges
a user's `resources` with the chart's, so raising a request alone leaves the default limit below it,
which the API server rejects only when the operator creates the pods; this says so at install.
*/}}
{{- define "higgs-audio-trainer.resources" -}}
{{- $res := deepCopy (.Values.resources | default dict) }}
{{- range $name, $limit := $res.limits | default dict }}
{{- $request := get ($res.requests | default dict) $name }}
{{- if $request }}
{{- $r := include "higgs-audio-trainer.quantityValue" $request }}
{{- $l := include "higgs-audio-trainer.quantityValue" $limit }}
{{- if and $r $l (gt (float64 $r) (float64 $l)) }}
{{- fail (printf "resources.requests.%s (%v) is above resources.limits.%s (%v); your resources merge with the chart's, so set both" $name $request $name $limit) }}
{{- end }}
{{- end }}
{{- end }}
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
Kind of the job: PyTorchJob (Kubeflow Training Operator v1) or TrainJob (Kubeflow Trainer v2).
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

{{/*
The preflight init container: the trainer's image, env and mounts, and its resources (an init container's
requests do not add to the pod's, and it must see the GPUs it counts), running `higgs-audio-trainer
preflight`, which exits 2 with one line per failed check.
*/}}
{{- define "higgs-audio-trainer.preflightContainer" -}}
- name: preflight
  image: {{ include "higgs-audio-trainer.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - higgs-audio-trainer
  args:
    - preflight
    - --expect_gpus={{ int .Values.gpu.count }}
    - --min_shm={{ .Values.preflight.minShm }}
    {{- with .Values.preflight.minFreeSpace }}
    - --min_free_space={{ . }}
    {{- end }}
    - --gateway_timeout_seconds={{ .Values.preflight.gatewayTimeoutSeconds }}
  env:
    {{- include "higgs-audio-trainer.env" . | trim | nindent 4 }}
  resources:
    {{- include "higgs-audio-trainer.resources" . | trim | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "higgs-audio-trainer.volumeMounts" (dict "root" . "output" true) | trim | nindent 4 }}
    - name: dshm
      mountPath: /dev/shm
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
  {{- if or .Values.preflight.enabled .Values.initContainers }}
  initContainers:
    {{- if .Values.preflight.enabled }}
    {{- include "higgs-audio-trainer.preflightContainer" . | trim | nindent 4 }}
    {{- end }}
    {{- with .Values.initContainers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
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

{{/* Checks of values that hold for both kinds of job. */}}
{{- define "higgs-audio-trainer.jobChecks" -}}
{{- $workers := int .Values.workers }}
{{- if and (gt $workers 0) (not .Values.storage.output.existingClaim) (not (has "ReadWriteMany" .Values.storage.output.accessModes)) }}
{{- fail (printf "storage.output.accessModes: %v cannot be mounted by pods on %d nodes; add ReadWriteMany, or use storage.output.existingClaim" .Values.storage.output.accessModes (add1 $workers)) }}
{{- end }}
{{- if and .Values.kueue.queueName .Values.runPolicy.suspend }}
{{- fail "runPolicy.suspend: Kueue (kueue.queueName) suspends and resumes the job itself; leave suspend false" }}
{{- end }}
{{- if and .Values.hostNetwork (not (has .Values.dnsPolicy (list "ClusterFirstWithHostNet" "None"))) }}
{{- fail "hostNetwork: with the node's network the pods resolve names through the node's DNS and cannot find the job's services (the rendezvous address); set dnsPolicy: ClusterFirstWithHostNet" }}
{{- end }}
{{- end }}

{{/* Values a TrainJob cannot honour: refused by name rather than dropped. */}}
{{- define "higgs-audio-trainer.trainJobChecks" -}}
{{- if .Values.elastic.enabled }}
{{- fail "elastic.enabled: Kubeflow Trainer v2 (kind TrainJob) has no elastic training; use kind PyTorchJob, or turn elastic off" }}
{{- end }}
{{- if eq .Values.restartPolicy "Always" }}
{{- fail "restartPolicy: Always is not allowed under kind TrainJob (its pods belong to batch Jobs); use ExitCode, OnFailure or Never" }}
{{- end }}
{{- with .Values.runPolicy.schedulingPolicy }}
{{- fail "runPolicy.schedulingPolicy: a PyTorchJob field; under kind TrainJob gang scheduling comes from the runtime's podGroupPolicy or Kueue (kueue.queueName)" }}
{{- end }}
{{- /* The pod-shaping values a user adds; the chart's own (preflight, volumes) are documented as the runtime's job. */}}
{{- if and .Values.trainJob.runtimeRef.name (or .Values.initContainers .Values.extraContainers .Values.extraVolumes) }}
{{- fail "trainJob.runtimeRef.name: with an existing runtime the chart sets only spec.trainer (image, command, args, env, resources); initContainers, extraContainers and extraVolumes belong to the runtime's pod template. Leave trainJob.runtimeRef.name empty to use the chart's own runtime" }}
{{- end }}
{{- end }}

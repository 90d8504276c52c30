{{/*
Every check of values that values.schema.json cannot make: the one place with `fail`. The helpers in
_names.tpl, _options.tpl and _pod.tpl stay pure and derive; this template asks them and refuses. Each job
template (pytorchjob.yaml, trainjob.yaml; one renders) includes it once, before it renders anything, and
the checks run in the order a user would fix them: names, options, pod values, the kind's limits, monitoring.
*/}}
{{- define "higgs-audio-trainer.validate" -}}
{{- $kind := include "higgs-audio-trainer.kind" . }}
{{- $known := include "higgs-audio-trainer.trainerOptionNames" . | splitList " " }}
{{- $fromSecret := .Values.trainerFromSecret | default dict }}
{{- $trainer := .Values.trainer | default dict }}

{{- /* Names. */}}
{{- $job := include "higgs-audio-trainer.jobName" . }}
{{- $names := list (list "jobName" (printf "%q (taken from the release name when jobName is empty)" $job) $job) }}
{{- if .Values.metrics.pushgateway.create }}
{{- $pgw := include "higgs-audio-trainer.pushgatewayName" . }}
{{- $names = append $names (list "fullnameOverride" (printf "the Pushgateway's Service name %q (from the release name, or fullnameOverride)" $pgw) $pgw) }}
{{- end }}
{{- range $names }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" (index . 2)) }}
{{- fail (printf "%s: %s is not a DNS-1035 label: lower-case letters, digits and '-', starting with a letter; set %s" (index . 0) (index . 1) (index . 0)) }}
{{- end }}
{{- end }}

{{- /* Trainer options. */}}
{{- range $name, $value := $trainer }}
{{- if not (kindIs "invalid" $value) }}
{{- if hasKey $fromSecret $name }}
{{- fail (printf "trainer.%s: also set in trainerFromSecret; keep one of them" $name) }}
{{- end }}
{{- if eq $name "pushgateway_password" }}
{{- fail "trainer.pushgateway_password: a password is never rendered into the pod spec as a plain value (anyone who can read the job could read it); put it in a Secret and set trainerFromSecret.pushgateway_password: {name: <secret>, key: <key>}" }}
{{- end }}
{{- end }}
{{- end }}
{{- $mount := .Values.storage.output.mountPath | trimSuffix "/" }}
{{- /* A derived output_dir is under the mount by construction: only a user's can be off it. */}}
{{- with $trainer.output_dir }}
{{- if not (or (eq . $mount) (hasPrefix (printf "%s/" $mount) .)) }}
{{- fail (printf "trainer.output_dir: %q is not under storage.output.mountPath %q; checkpoints and adapters must land on the output volume, the only one that outlives the pods" . $mount) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.podMonitor.enabled (not (kindIs "invalid" $trainer.metrics_port)) }}
{{- if ne (include "higgs-audio-trainer.envValue" $trainer.metrics_port) (include "higgs-audio-trainer.envValue" .Values.metrics.podMonitor.port) }}
{{- fail (printf "trainer.metrics_port: %v differs from metrics.podMonitor.port %v, the port the PodMonitor scrapes; set only metrics.podMonitor.port" $trainer.metrics_port .Values.metrics.podMonitor.port) }}
{{- end }}
{{- end }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $timeoutDerived := not (or (not (kindIs "invalid" $trainer.signal_save_timeout_seconds)) (hasKey $fromSecret "signal_save_timeout_seconds")) }}
{{- /* values.schema.json holds the same floor; this is for --skip-schema-validation. */}}
{{- if and $timeoutDerived (has "signal_save_timeout_seconds" $known) (lt $grace 30) }}
{{- fail (printf "terminationGracePeriodSeconds: %v is too short: on SIGTERM the trainer gets it minus 20 seconds (trainer.signal_save_timeout_seconds, derived from it) to finish its step and save a checkpoint; set at least 30" $grace) }}
{{- end }}
{{- /* A derived timeout is the grace period less 20 seconds: only a user's can reach it. */}}
{{- with $trainer.signal_save_timeout_seconds }}
{{- if ge (float64 .) (float64 $grace) }}
{{- fail (printf "trainer.signal_save_timeout_seconds: %v must be below terminationGracePeriodSeconds %v, or the kubelet's SIGKILL cuts the checkpoint short before the trainer can say why; leave it null to derive it" . $grace) }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if has (lower .name) $known }}
{{- fail (printf "extraEnv: %s is a trainer option; set trainer.%s instead, where the schema checks it" .name (lower .name)) }}
{{- end }}
{{- if and (eq $kind "TrainJob") (has .name (list "PET_NNODES" "PET_NPROC_PER_NODE" "PET_NODE_RANK" "PET_MASTER_ADDR" "PET_MASTER_PORT")) }}
{{- fail (printf "extraEnv: %s is set by Kubeflow Trainer's torch plugin under kind TrainJob, and its webhook refuses a TrainJob that sets it; use workers and nprocPerNode" .name) }}
{{- end }}
{{- if has .name (list "HF_TOKEN" "HOME") }}
{{- fail (printf "extraEnv: the chart sets %s itself (HF_TOKEN from hfToken.secretName, HOME for the read-only root filesystem)" .name) }}
{{- end }}
{{- end }}

{{- /*
Pod values. Helm merges a user's `resources` with the chart's, so raising a request alone leaves the
default limit below it, which the API server rejects only when the operator creates the pods.
*/}}
{{- $res := .Values.resources | default dict }}
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

{{- /* The job: values that hold for both kinds. */}}
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

{{- /* The kind's own limits: elastic training needs Workers; a TrainJob refuses by name what it cannot honour rather than dropping it. */}}
{{- if eq $kind "PyTorchJob" }}
{{- if .Values.elastic.enabled }}
{{- if lt $workers 1 }}
{{- fail "workers: elastic.enabled needs at least 1 Worker (an elastic job has Workers only, no Master); set workers >= 1" }}
{{- end }}
{{- $replicas := include "higgs-audio-trainer.elasticReplicas" . | fromYaml }}
{{- if or (gt (int $replicas.min) $workers) (lt (int $replicas.max) $workers) }}
{{- fail (printf "elastic.minReplicas (%d) <= workers (%d) <= elastic.maxReplicas (%d) must hold" (int $replicas.min) $workers (int $replicas.max)) }}
{{- end }}
{{- end }}
{{- else if eq $kind "TrainJob" }}
{{- if .Values.elastic.enabled }}
{{- fail "elastic.enabled: Kubeflow Trainer v2 (kind TrainJob) has no elastic training; use kind PyTorchJob, or turn elastic off" }}
{{- end }}
{{- if eq .Values.restartPolicy "Always" }}
{{- fail "restartPolicy: Always is not allowed under kind TrainJob (its pods belong to batch Jobs); use ExitCode, OnFailure or Never" }}
{{- end }}
{{- with .Values.runPolicy.schedulingPolicy }}
{{- fail "runPolicy.schedulingPolicy: a PyTorchJob field; under kind TrainJob gang scheduling comes from the runtime's podGroupPolicy or Kueue (kueue.queueName)" }}
{{- end }}
{{- /* The pod-shaping values a user adds; the chart's own volumes are documented as the runtime's job. */}}
{{- if and .Values.trainJob.runtimeRef.name (or .Values.initContainers .Values.extraContainers .Values.extraVolumes) }}
{{- fail "trainJob.runtimeRef.name: with an existing runtime the chart sets only spec.trainer (image, command, args, env, resources); initContainers, extraContainers and extraVolumes belong to the runtime's pod template. Leave trainJob.runtimeRef.name empty to use the chart's own runtime" }}
{{- end }}
{{- end }}

{{- /* Monitoring: each series reaches Prometheus by one path, from a target that answers. */}}
{{- if .Values.metrics.podMonitor.enabled }}
{{- $opts := include "higgs-audio-trainer.trainerOptions" . | fromYaml }}
{{- if or (hasKey $opts "pushgateway_url") (hasKey $fromSecret "pushgateway_url") }}
{{- fail "metrics.podMonitor.enabled: the trainer also pushes its series to a Pushgateway (metrics.pushgateway.create or trainer.pushgateway_url), so Prometheus would collect each series twice and every alert would fire twice. Scrape one path only: the Pushgateway (the chart's own by default) with the PodMonitor off, or the PodMonitor with metrics.pushgateway.create=false and no trainer.pushgateway_url" }}
{{- end }}
{{- if .Values.elastic.enabled }}
{{- fail "metrics.podMonitor.enabled: with elastic.enabled rank 0 may run on any Worker, so a PodMonitor would scrape every Worker and all but one would never answer; use the Pushgateway (metrics.pushgateway.create, the default), to which every rank pushes" }}
{{- end }}
{{- end }}
{{- if and (eq (toString .Values.metrics.pushgateway.serviceMonitor.enabled) "true") (not .Values.metrics.pushgateway.create) }}
{{- fail "metrics.pushgateway.serviceMonitor.enabled: scrapes the Pushgateway of metrics.pushgateway.create, which is off; a Pushgateway of your own is scraped by its own ServiceMonitor or scrape config (with honor_labels: true)" }}
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

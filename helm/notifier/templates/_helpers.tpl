{{/*
Expand the name of the chart.
*/}}
{{- define "notifier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 characters (DNS label limit).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "notifier.fullname" -}}
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
Chart name and version as used by the chart label.
*/}}
{{- define "notifier.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The namespace of every namespaced resource.
*/}}
{{- define "notifier.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "notifier.labels" -}}
helm.sh/chart: {{ include "notifier.chart" . }}
{{ include "notifier.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/component: notifier
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels (never change them: a StatefulSet's selector is immutable).
*/}}
{{- define "notifier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "notifier.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the service account to use.
*/}}
{{- define "notifier.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "notifier.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret mounted at secretsMountPath: existingSecret, or the one the chart creates from
`secrets`; empty when there is neither. Fails when both are given.
*/}}
{{- define "notifier.secretName" -}}
{{- if and .Values.existingSecret .Values.secrets }}
{{- fail "give either existingSecret or secrets, not both" }}
{{- end }}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.secrets }}
{{- include "notifier.fullname" . }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "notifier.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Where the ConfigMap is mounted, and the config file in it.
*/}}
{{- define "notifier.configDir" -}}
/etc/notifier/config
{{- end }}

{{/*
The notifier configuration as rendered into the ConfigMap: .Values.config with metrics.listen
forced to <listenHost>:<containerPort> (metrics on, the probes need them) and state.path forced
onto the volume. Also checks that every `<field>_file` (and Kafka ssl_cafile, ssl_certfile,
ssl_keyfile) under secretsMountPath names a key of `secrets` when the chart creates the Secret.
*/}}
{{- define "notifier.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $metrics := deepCopy ($cfg.metrics | default dict) }}
{{- $host := .Values.listenHost }}
{{- if contains ":" $host }}
{{- $host = printf "[%s]" $host }}
{{- end }}
{{- $_ := set $metrics "listen" (printf "%s:%d" $host (int .Values.containerPort)) }}
{{- $_ = set $metrics "enabled" true }}
{{- $_ = set $cfg "metrics" $metrics }}
{{- $state := deepCopy ($cfg.state | default dict) }}
{{- $_ = set $state "path" (printf "%s/notifier.db" (trimSuffix "/" .Values.persistence.mountPath)) }}
{{- $_ = set $cfg "state" $state }}
{{- if hasKey $cfg "cluster" }}
{{- fail "config.cluster is set by the chart: put the cluster settings under `cluster:` (with cluster.enabled: true), which also deploys the replicas without a state volume" }}
{{- end }}
{{- if .Values.cluster.enabled }}
{{- $_ = set $cfg "cluster" (include "notifier.clusterConfig" . | fromYaml) }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- $prefix := printf "%s/" (trimSuffix "/" .Values.secretsMountPath) }}
{{- range $section := list "credentials" "sinks" "cluster" }}
{{- $items := get $cfg $section | default list }}
{{- if kindIs "map" $items }}
{{- $items = list $items }}
{{- end }}
{{- range $i, $item := $items }}
{{- range $key, $value := $item }}
{{- if and (or (hasSuffix "_file" $key) (has $key (list "ssl_cafile" "ssl_certfile" "ssl_keyfile"))) (kindIs "string" $value) (hasPrefix $prefix $value) }}
{{- $file := trimPrefix $prefix $value }}
{{- if not (hasKey ($.Values.secrets | default dict) $file) }}
{{- $where := ternary (printf "cluster.%s" $key) (printf "config.%s[%d].%s" $section $i $key) (eq $section "cluster") }}
{{- fail (printf "%s reads %s, but `secrets` has no key %q (add it, or set existingSecret)" $where $value $file) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Seconds in a notifier duration: a number, or "500ms", "30s", "5m", "1h", "2d", "1h30m".
*/}}
{{- define "notifier.durationSeconds" -}}
{{- $s := toString . | trim }}
{{- if regexMatch "^([0-9]+\\.?[0-9]*|\\.[0-9]+)$" $s }}
{{- $s | float64 }}
{{- else }}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 }}
{{- $total := 0.0 }}
{{- range regexFindAll "([0-9]+\\.?[0-9]*|\\.[0-9]+)(ms|s|m|h|d)" $s -1 }}
{{- $n := regexFind "^[0-9.]+" . }}
{{- $total = addf $total (mulf ($n | float64) (get $units (trimPrefix $n .))) }}
{{- end }}
{{- $total }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value if set (it must exceed config.shutdown_timeout), else
the notifier's shutdown_timeout (default 20s) rounded up plus 10 s to close sinks and the store.
*/}}
{{- define "notifier.terminationGracePeriodSeconds" -}}
{{- $timeout := include "notifier.durationSeconds" (dig "shutdown_timeout" 20 (.Values.config | default dict)) | float64 }}
{{- $explicit := .Values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $explicit }}
{{- add (ceil $timeout | int) 10 }}
{{- else if le (float64 $explicit) $timeout }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than config.shutdown_timeout (%vs): Kubernetes would kill the notifier before it has drained" $explicit $timeout) }}
{{- else }}
{{- int $explicit }}
{{- end }}
{{- end }}

{{/*
Chart keys of `cluster:` that shape the workload; every other key is the notifier's own cluster
section (config.cluster).
*/}}
{{- define "notifier.clusterChartKeys" -}}
enabled podDisruptionBudget podAntiAffinity antiAffinityTopologyKey cacheSizeLimit
{{- end }}

{{/*
The notifier's `cluster:` section, from .Values.cluster without the chart's own keys: group
defaults to <namespace>.<full name> (consumer groups are cluster-wide in Kafka, release names
are not) and state_topic to <group>.state. Fails on what cluster mode cannot run: fewer than two
replicas, no bootstrap servers, a jsonl or stdout sink (local files, one per pod), a volume
claim shared by the replicas.
*/}}
{{- define "notifier.clusterConfig" -}}
{{- $c := deepCopy .Values.cluster }}
{{- range splitList " " (include "notifier.clusterChartKeys" .) }}
{{- $_ := unset $c . }}
{{- end }}
{{- if lt (int .Values.replicaCount) 2 }}
{{- fail (printf "cluster.enabled needs replicaCount of 2 or more (got %v): failover needs a replica to fail over to" .Values.replicaCount) }}
{{- end }}
{{- if not $c.bootstrap_servers }}
{{- fail "cluster.enabled needs cluster.bootstrap_servers: the Kafka cluster that holds the consumer group and the state topic" }}
{{- end }}
{{- if .Values.persistence.existingClaim }}
{{- fail "persistence.existingClaim cannot be used with cluster.enabled: the replicas keep no volume (their state is the Kafka state topic)" }}
{{- end }}
{{- range $i, $sink := (.Values.config | default dict).sinks | default list }}
{{- if has $sink.type (list "jsonl" "stdout") }}
{{- fail (printf "config.sinks[%d] (%s, type %s) cannot be used with cluster.enabled: it writes where only one replica sees it; use kafka or webhook sinks" $i $sink.name $sink.type) }}
{{- end }}
{{- end }}
{{- $group := $c.group | default (printf "%s.%s" (include "notifier.namespace" .) (include "notifier.fullname" .)) }}
{{- $_ := set $c "group" $group }}
{{- $_ = set $c "state_topic" ($c.state_topic | default (printf "%s.state" $group)) }}
{{- toYaml $c }}
{{- end }}

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
{{- if not .Values.existingSecret }}
{{- $prefix := printf "%s/" (trimSuffix "/" .Values.secretsMountPath) }}
{{- range $section := list "credentials" "sinks" }}
{{- range $i, $item := (get $cfg $section | default list) }}
{{- range $key, $value := $item }}
{{- if and (or (hasSuffix "_file" $key) (has $key (list "ssl_cafile" "ssl_certfile" "ssl_keyfile"))) (kindIs "string" $value) (hasPrefix $prefix $value) }}
{{- $file := trimPrefix $prefix $value }}
{{- if not (hasKey ($.Values.secrets | default dict) $file) }}
{{- fail (printf "config.%s[%d].%s reads %s, but `secrets` has no key %q (add it, or set existingSecret)" $section $i $key $value $file) }}
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

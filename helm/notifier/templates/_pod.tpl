{{/*
The pod template of the workload: the StatefulSet (one replica, SQLite state on a claim) or, with
cluster.enabled, the Deployment (replicas share the work through Kafka; the state volume is an
emptyDir holding only a local cache of the state topic).
*/}}
{{- define "notifier.podTemplate" -}}
{{- $secretName := include "notifier.secretName" . }}
{{- $configDir := include "notifier.configDir" . -}}
metadata:
  labels:
    {{- include "notifier.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- if and .Values.secrets (not .Values.existingSecret) }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "notifier.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # SIGTERM -> the notifier drains within config.shutdown_timeout; this leaves it the margin.
  terminationGracePeriodSeconds: {{ include "notifier.terminationGracePeriodSeconds" . }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: notifier
      image: {{ include "notifier.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - run
        - --config
        - {{ $configDir }}/config.yaml
      # Relative paths in the config (jsonl sinks) resolve onto the state volume.
      workingDir: {{ .Values.persistence.mountPath }}
      {{- with .Values.extraEnv }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: metrics
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
      {{- with .Values.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ $configDir }}
          readOnly: true
        {{- if $secretName }}
        - name: secrets
          mountPath: {{ .Values.secretsMountPath }}
          readOnly: true
        {{- end }}
        - name: state
          mountPath: {{ .Values.persistence.mountPath }}
        - name: tmp
          mountPath: /tmp
        {{- range .Values.secretMounts }}
        - name: {{ .name }}
          mountPath: {{ .mountPath }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "notifier.fullname" . }}
    {{- if $secretName }}
    - name: secrets
      secret:
        secretName: {{ $secretName }}
        defaultMode: 0440
    {{- end }}
    - name: tmp
      emptyDir: {}
    {{- if .Values.cluster.enabled }}
    # Cluster mode: only a local cache of the state topic, rebuilt by a restore when lost.
    - name: state
      emptyDir:
        {{- with .Values.cluster.cacheSizeLimit }}
        sizeLimit: {{ . | quote }}
        {{- else }} {}
        {{- end }}
    {{- else if not .Values.persistence.enabled }}
    - name: state
      emptyDir: {}
    {{- else if .Values.persistence.existingClaim }}
    - name: state
      persistentVolumeClaim:
        claimName: {{ .Values.persistence.existingClaim }}
    {{- end }}
    {{- range .Values.secretMounts }}
    - name: {{ .name }}
      secret:
        secretName: {{ .secretName }}
        defaultMode: 0440
        {{- with .items }}
        items:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.affinity }}
  affinity:
    {{- toYaml .Values.affinity | nindent 4 }}
  {{- else if and .Values.cluster.enabled (ne .Values.cluster.podAntiAffinity "none") }}
  # Replicas on different nodes, so one node failure costs at most one replica's partitions.
  affinity:
    podAntiAffinity:
      {{- if eq .Values.cluster.podAntiAffinity "hard" }}
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: {{ .Values.cluster.antiAffinityTopologyKey }}
          labelSelector:
            matchLabels:
              {{- include "notifier.selectorLabels" . | nindent 14 }}
      {{- else }}
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: {{ .Values.cluster.antiAffinityTopologyKey }}
            labelSelector:
              matchLabels:
                {{- include "notifier.selectorLabels" . | nindent 16 }}
      {{- end }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

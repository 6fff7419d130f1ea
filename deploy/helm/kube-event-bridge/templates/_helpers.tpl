{{/* Names, labels and the bridge config as rendered (values plus the chart's defaults). */}}

{{- define "keb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keb.fullname" -}}
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

{{- define "keb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keb.labels" -}}
{{ include "keb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "keb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keb.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The bridge config: .Values.config with the chart's defaults filled in. The Lease is named after
the release (several bridges may share a namespace), and the Lease and the configmap checkpoint
store live in the release namespace, where the Role grants access to them.
*/}}
{{- define "keb.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $le := get $config "leader_election" | default dict }}
{{- if and $le.enabled (not $le.name) }}
{{- $_ := set $le "name" (include "keb.fullname" .) }}
{{- end }}
{{- if and $le.enabled $le.namespace (ne $le.namespace .Release.Namespace) }}
{{- fail (printf "config.leader_election.namespace (%s) must be the release namespace (%s): the chart's Role grants the Lease there" $le.namespace .Release.Namespace) }}
{{- end }}
{{- $_ := set $config "leader_election" $le }}
{{- $cp := get $config "checkpoint" | default dict }}
{{- if and (eq (default "file" $cp.store) "configmap") $cp.namespace (ne $cp.namespace .Release.Namespace) }}
{{- fail (printf "config.checkpoint.namespace (%s) must be the release namespace (%s): the chart's Role grants the ConfigMaps there" $cp.namespace .Release.Namespace) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not $le.enabled) }}
{{- fail "replicaCount > 1 needs config.leader_election.enabled: true (otherwise every replica sends every event)" }}
{{- end }}
{{- if eq (include "keb.port" .) "0" }}
{{- fail "config.http.port must not be 0: the probes and the metrics Service use it" }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{- define "keb.port" -}}
{{- $http := .Values.config.http | default dict }}
{{- if hasKey $http "port" }}{{ int $http.port }}{{ else }}9090{{ end }}
{{- end }}

{{/* Names and labels. */}}
{{- define "tern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tern.fullname" -}}
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

{{/* The headless Service the StatefulSet is governed by; discovery watches it. */}}
{{- define "tern.headlessName" -}}
{{- printf "%s-headless" (include "tern.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tern.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tern.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tern.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tern.labels" -}}
helm.sh/chart: {{ include "tern.chart" . }}
{{ include "tern.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tern
{{- end }}

{{- define "tern.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tern.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tern.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the mesh secret, and its key. */}}
{{- define "tern.clusterSecretName" -}}
{{- default (printf "%s-cluster" (include "tern.fullname" .)) .Values.clusterSecret.existingSecret }}
{{- end }}

{{- define "tern.clusterSecretKey" -}}
{{- if .Values.clusterSecret.existingSecret }}{{ .Values.clusterSecret.key }}{{ else }}secret{{ end }}
{{- end }}

{{/*
Cluster membership and peer discovery, as TERN_… environment variables.
Kept in this one helper so the keys are easy to adjust as the cluster and
discovery crates settle: the mesh listens on 44053 and finds its peers by
watching the EndpointSlices of the headless Service (which publishes
not-ready addresses, so pods find each other before they are ready).
*/}}
{{- define "tern.clusterEnv" -}}
- name: TERN_CLUSTER__ENABLED
  value: "true"
- name: TERN_CLUSTER__BIND
  value: "0.0.0.0:44053"
- name: TERN_CLUSTER__SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "tern.clusterSecretName" . }}
      key: {{ include "tern.clusterSecretKey" . }}
- name: TERN_DISCOVERY__MODE
  value: kubernetes
- name: TERN_DISCOVERY__SERVICE
  value: {{ include "tern.headlessName" . }}
- name: TERN_DISCOVERY__NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{- end }}

{{/* Password and ACL files from auth.existingSecret. */}}
{{- define "tern.authEnv" -}}
{{- if .Values.auth.existingSecret }}
- name: TERN_AUTH__PASSWORD_FILE
  value: /etc/tern/auth/{{ .Values.auth.passwordKey }}
{{- if .Values.auth.aclKey }}
- name: TERN_AUTH__ACL_FILE
  value: /etc/tern/auth/{{ .Values.auth.aclKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* Admin API keys from the mounted Secret: the node reads the file, and
`tern admin` run in the pod presents its first key. */}}
{{- define "tern.adminEnv" -}}
{{- if .Values.adminApi.existingSecret }}
- name: TERN_ADMIN__API_KEYS_FILE
  value: /etc/tern/admin/{{ .Values.adminApi.key }}
- name: TERN_ADMIN_API_KEY_FILE
  value: /etc/tern/admin/{{ .Values.adminApi.key }}
{{- end }}
{{- end }}

{{/* TLS listener settings pointing at the mounted Secret. */}}
{{- define "tern.tlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: TERN_LISTENERS__TLS__ENABLED
  value: "true"
- name: TERN_LISTENERS__TLS__BIND
  value: "0.0.0.0:8883"
- name: TERN_LISTENERS__TLS__CERT
  value: /etc/tern/tls/tls.crt
- name: TERN_LISTENERS__TLS__KEY
  value: /etc/tern/tls/tls.key
{{- if .Values.tls.requireClientCert }}
- name: TERN_LISTENERS__TLS__CA
  value: /etc/tern/tls/ca.crt
- name: TERN_LISTENERS__TLS__REQUIRE_CLIENT_CERT
  value: "true"
{{- end }}
{{- end }}
{{- end }}

{{/*
The `config` value as a TOML document. Helm's toToml would print every
number as a float (values arrive as JSON numbers), which the broker's
integer keys reject, so tables, keys and values are written out here.
Call with (dict "prefix" "" "map" .Values.config).
*/}}
{{- define "tern.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "tern.toml.value" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) }}
{{- if eq (float64 $v) (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "tern.toml.value" $e }}{{ end }}]
{{- else }}{{ fail (printf "config: cannot write %v (%s) as TOML" $v (kindOf $v)) }}
{{- end }}
{{- end }}

{{- define "tern.toml.table" -}}
{{- $prefix := .prefix }}
{{- range $k, $v := .map }}
{{- if not (kindIs "map" $v) }}
{{- if not (kindIs "invalid" $v) }}
{{ include "tern.toml.key" $k }} = {{ include "tern.toml.value" $v }}
{{- end }}
{{- end }}
{{- end }}
{{- range $k, $v := .map }}
{{- if kindIs "map" $v }}
{{- $name := printf "%s%s" $prefix (include "tern.toml.key" $k) }}

[{{ $name }}]
{{- include "tern.toml.table" (dict "prefix" (printf "%s." $name) "map" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the chart, truncated for label values. */}}
{{- define "pinproxy.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name. */}}
{{- define "pinproxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pinproxy.webhookName" -}}
{{- printf "%s-webhook" (include "pinproxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pinproxy.tlsSecretName" -}}
{{- printf "%s-tls" (include "pinproxy.webhookName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pinproxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "pinproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "pinproxy.webhookSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pinproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "pinproxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The Secret the sidecars mount. */}}
{{- define "pinproxy.pinsSecretName" -}}
{{- .Values.pins.existingSecret | default .Values.pins.secretName -}}
{{- end -}}

{{/*
pins.yaml: pins.content as written, or the default pinset, which observes:
every host allowed with CA validation only, nothing pinned, in-cluster
names and CIDRs relayed as passthrough.
*/}}
{{- define "pinproxy.pinsContent" -}}
{{- if .Values.pins.content -}}
{{- .Values.pins.content -}}
{{- else -}}
{{- $d := .Values.pins.defaultPinset -}}
{{- $passthrough := concat ($d.passthrough | default list) ($d.serviceCIDRs | default list) ($d.podCIDRs | default list) | uniq -}}
# pinproxy's default pinset (chart value pins.defaultPinset): it observes.
# Every host is allowed with ordinary CA validation and nothing is pinned;
# only unlisted hosts resolving to private, loopback or link-local
# addresses are refused (403 private-address). To enforce pins, add hosts
# and set pins.content (docs/kubernetes.md, "From observing to enforcing").
version: 1
defaults:
  unlisted: allow
  mode: report
# In-cluster traffic: relayed as it came, never pinned, exempt from the
# private-address rule. Short names need the Service CIDR listed.
{{- if $passthrough }}
passthrough:
{{- range $passthrough }}
  - {{ . | quote }}
{{- end }}
{{- else }}
passthrough: []
{{- end }}
hosts: {}
{{- end -}}
{{- end -}}

{{/* The --ca-bundle-extra-from value of one sidecar.caBundleExtra entry. */}}
{{- define "pinproxy.caBundleExtraFrom" -}}
{{- if .configMap -}}
configmap/{{ .configMap }}:{{ .key | default "ca.crt" }}
{{- else -}}
secret/{{ .secret }}:{{ .key | default "ca.crt" }}
{{- end -}}
{{- end -}}

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
{{- $services := include "pinproxy.serviceCIDRs" . | fromJsonArray -}}
{{- $passthrough := concat ($d.passthrough | default list) $services ($d.podCIDRs | default list) | uniq -}}
# pinproxy's default pinset (chart value pins.defaultPinset): it observes.
# Every host is allowed with ordinary CA validation and nothing is pinned;
# only unlisted hosts resolving to loopback, link-local or private
# addresses outside the passthrough list below are refused (403
# private-address). To enforce pins, add hosts and set pins.content
# (docs/kubernetes.md, "From observing to enforcing").
version: 1
defaults:
  unlisted: allow
  mode: report
# In-cluster traffic: relayed as it came, never pinned, exempt from the
# private-address rule. Short names (http://orders/) match by the Service
# IP they resolve to: the Service CIDRs are listed ({{ include "pinproxy.serviceCIDRsSource" . }}).
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

{{/*
The Service CIDRs the default pinset passes through, as a JSON list:
pins.defaultPinset.serviceCIDRs when set; else the cluster's ServiceCIDR
objects (networking.k8s.io/v1, Kubernetes >= 1.33) read at install; else
(older clusters, `helm template`) every private range a Service CIDR can
lie in, so in-cluster Service IPs are never refused as private-address.
*/}}
{{- define "pinproxy.serviceCIDRs" -}}
{{- $d := .Values.pins.defaultPinset -}}
{{- $found := list -}}
{{- if $d.serviceCIDRs -}}
{{- $found = $d.serviceCIDRs -}}
{{- else if .Capabilities.APIVersions.Has "networking.k8s.io/v1/ServiceCIDR" -}}
{{- range (lookup "networking.k8s.io/v1" "ServiceCIDR" "" "").items | default list -}}
{{- $found = concat $found (.spec.cidrs | default list) -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- $found = include "pinproxy.privateRanges" . | fromJsonArray -}}
{{- end -}}
{{- toJson $found -}}
{{- end -}}

{{/* Where a Service CIDR can lie: RFC 1918 and IPv6 unique local addresses. */}}
{{- define "pinproxy.privateRanges" -}}
["10.0.0.0/8","172.16.0.0/12","192.168.0.0/16","fd00::/8"]
{{- end -}}

{{/* How the default pinset's Service CIDRs were found, for NOTES.txt. */}}
{{- define "pinproxy.serviceCIDRsSource" -}}
{{- $services := include "pinproxy.serviceCIDRs" . | fromJsonArray -}}
{{- if .Values.pins.defaultPinset.serviceCIDRs -}}
pins.defaultPinset.serviceCIDRs
{{- else if eq (toJson $services) (include "pinproxy.privateRanges" .) -}}
fallback
{{- else -}}
the cluster's ServiceCIDR objects
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

{{/* Whether sidecars verify signed pinsets (pinset.signing has a key): "true" or "". */}}
{{- define "pinproxy.signing" -}}
{{- if or .Values.pinset.signing.publicKey .Values.pinset.signing.publicKeyFrom -}}true{{- end -}}
{{- end -}}

{{/* The ConfigMap the chart writes pinset.signing.publicKey to. */}}
{{- define "pinproxy.pinsetKeyName" -}}
{{- printf "%s-pinset-key" (include "pinproxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Whether the webhook gives sidecars pinset.signing.publicKey inline (in the
pod spec: --pinset-key-inline), "true" or "". Unset counts as true (values
reused from a release before the option existed).
*/}}
{{- define "pinproxy.pinsetKeyInline" -}}
{{- $s := .Values.pinset.signing -}}
{{- if and $s.publicKey (not $s.publicKeyFrom) (ne (toString $s.inline) "false") -}}true{{- end -}}
{{- end -}}

{{/* The --pinset-key-from values of the injected sidecars, one per line (none when inline). */}}
{{- define "pinproxy.pinsetKeyFrom" -}}
{{- $s := .Values.pinset.signing -}}
{{- if include "pinproxy.pinsetKeyInline" . -}}
{{- else if $s.publicKeyFrom -}}
{{- range $s.publicKeyFrom }}
{{ . }}
{{- end -}}
{{- else if $s.publicKey -}}
{{- $name := include "pinproxy.pinsetKeyName" . }}
configmap/{{ $name }}:cosign.pub
{{- if $s.nextPublicKey }}
configmap/{{ $name }}:next.pub
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
"true" when pods of labelled namespaces may not opt out
(webhook.labelledNamespaces.podOptOut: false), else empty. A boolean false
only: a release upgraded with --reuse-values has no such key and keeps
allowing, as before the switch existed.
*/}}
{{- define "pinproxy.refusePodOptOut" -}}
{{- $w := .Values.webhook.labelledNamespaces -}}
{{- if and $w.enabled (hasKey $w "podOptOut") (kindIs "bool" $w.podOptOut) (not $w.podOptOut) -}}
true
{{- end -}}
{{- end }}

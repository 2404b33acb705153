{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "spike.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "spike.operatorName" -}}
{{- printf "%s-operator" (include "spike.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "spike.serviceAccountName" -}}
{{- default (include "spike.operatorName" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Labels that select the operator's pods; they never change across upgrades. */}}
{{- define "spike.selectorLabels" -}}
app.kubernetes.io/name: spike-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "spike.labels" -}}
{{ include "spike.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: spike
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The image reference: by digest when one is given, else by tag (default appVersion). */}}
{{- define "spike.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

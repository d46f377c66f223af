{{/* Labels of every object: the kustomize base's (part-of) and Helm's. */}}
{{- define "fairway.labels" -}}
app.kubernetes.io/part-of: fairway
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The selector of the control plane's pods. */}}
{{- define "fairway.selector" -}}
app.kubernetes.io/name: fairway-controlplane
{{- end }}

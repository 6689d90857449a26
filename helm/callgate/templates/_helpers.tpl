{{- define "callgate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "callgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "callgate.labels" -}}
app.kubernetes.io/name: {{ include "callgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "callgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "callgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "callgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "callgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "callgate.policiesConfigMap" -}}
{{- if .Values.policies.existingConfigMap -}}
{{- .Values.policies.existingConfigMap -}}
{{- else if .Values.policies.files -}}
{{- printf "%s-policies" (include "callgate.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Refuse values that would render but not work: SQLite belongs to one pod, and so on. */}}
{{- define "callgate.checks" -}}
{{- if not .Values.storage.postgresql.url -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}
{{- fail "callgate keeps its store in SQLite, which one pod owns: more than one replica (or autoscaling) needs storage.postgresql.url" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (not .Values.storage.postgresql.url) -}}
{{- fail "podDisruptionBudget with SQLite's one pod would block every node drain: enable it with several replicas (storage.postgresql.url)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled .Values.networkPolicy.enabled (not .Values.networkPolicy.adminFrom) -}}
{{- fail "serviceMonitor needs the metrics port open to Prometheus: list its namespace or pods in networkPolicy.adminFrom" -}}
{{- end -}}
{{- if and (not .Values.existingSecret) (not .Values.existingConfigMap) (regexMatch "token_env|(^|[^$])[$][{]" (toJson .Values.config)) -}}
{{- fail "config reads environment variables (token_env or ${...}): put them in a Secret and name it in existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* callgate.yaml: the user's config with what the chart owns set on top. */}}
{{- define "callgate.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "listen" (dict "host" "0.0.0.0" "port" 8080) -}}
{{- $_ := set $config "admin" (dict "host" "0.0.0.0" "port" 8081) -}}
{{- $policy := deepCopy (default (dict) (get $config "policy")) -}}
{{- $_ := set $policy "path" "/etc/callgate/policies" -}}
{{- $_ := set $policy "engine" "embedded" -}}
{{- if .Values.opa.enabled -}}
{{- $policy = merge (dict "engine" "opa" "opa_url" "http://127.0.0.1:8181" "opa_push" true "opa_timeout_s" .Values.opa.decisionTimeoutS) $policy -}}
{{- end -}}
{{- $_ := set $config "policy" $policy -}}
{{- $storage := default (dict) (get $config "storage") -}}
{{- $_ := set $storage "url" (.Values.storage.postgresql.url | default "sqlite:////data/callgate.db") -}}
{{- $_ := set $config "storage" $storage -}}
{{- $audit := default (dict) (get $config "audit") -}}
{{- $_ := set $audit "url" (.Values.storage.postgresql.url | default "sqlite:////data/audit.db") -}}
{{- $_ := set $config "audit" $audit -}}
{{- toYaml $config -}}
{{- end -}}

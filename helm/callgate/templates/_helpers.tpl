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

{{/* "true" when the store's URL comes from storage.postgresql's Secret. */}}
{{- define "callgate.storeOnPostgresql" -}}
{{- with .Values.storage.postgresql -}}
{{- if and .existingSecret .storageUrlKey -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when the audit log is on and its URL comes from storage.postgresql's Secret. */}}
{{- define "callgate.auditOnPostgresql" -}}
{{- with .Values.storage.postgresql -}}
{{- if and .existingSecret .auditUrlKey (dig "audit" "enabled" true $.Values.config) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* What is kept in SQLite files under /data, which one pod owns: "" when nothing is. */}}
{{- define "callgate.onSqlite" -}}
{{- $on := list -}}
{{- if not (include "callgate.storeOnPostgresql" .) -}}
{{- $on = append $on "the store" -}}
{{- end -}}
{{- if and (dig "audit" "enabled" true .Values.config) (not (include "callgate.auditOnPostgresql" .)) -}}
{{- $on = append $on "the audit log" -}}
{{- end -}}
{{- join " and " $on -}}
{{- end -}}

{{- define "callgate.limitsOnRedis" -}}
{{- if .Values.redis.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Refuse values that would render but not work: SQLite belongs to one pod, and so on. */}}
{{- define "callgate.checks" -}}
{{- $several := "" -}}
{{- if .Values.autoscaling.enabled -}}
{{- $several = "autoscaling" -}}
{{- else if gt (int .Values.replicaCount) 1 -}}
{{- $several = printf "replicaCount %d" (int .Values.replicaCount) -}}
{{- else if .Values.podDisruptionBudget.enabled -}}
{{- $several = "podDisruptionBudget is for several pods (on one it would block every node drain)" -}}
{{- end -}}
{{- $sqlite := include "callgate.onSqlite" . -}}
{{- if and $several $sqlite -}}
{{- fail (printf "%s: several pods need the store and the audit log on PostgreSQL (storage.postgresql.existingSecret), but %s %s on SQLite, whose files one pod owns" $several $sqlite (ternary "are" "is" (contains " and " $sqlite))) -}}
{{- end -}}
{{- if and $several (not (include "callgate.limitsOnRedis" .)) -}}
{{- fail (printf "%s: several pods need limits on Redis (redis.existingSecret), but limits are counted in memory, where every pod would admit the whole of each limit" $several) -}}
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

{{/* The gateway's environment: existingSecret's keys, and the database and Redis URLs
from their Secrets, which the config reads as ${CALLGATE_...}. */}}
{{- define "callgate.env" -}}
{{- if .Values.existingSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.existingSecret }}
{{- end }}
{{- if or (include "callgate.storeOnPostgresql" .) (include "callgate.auditOnPostgresql" .) (include "callgate.limitsOnRedis" .) }}
env:
  {{- if include "callgate.storeOnPostgresql" . }}
  - name: CALLGATE_STORAGE_URL
    valueFrom:
      secretKeyRef: {name: {{ .Values.storage.postgresql.existingSecret }}, key: {{ .Values.storage.postgresql.storageUrlKey }}}
  {{- end }}
  {{- if include "callgate.auditOnPostgresql" . }}
  - name: CALLGATE_AUDIT_URL
    valueFrom:
      secretKeyRef: {name: {{ .Values.storage.postgresql.existingSecret }}, key: {{ .Values.storage.postgresql.auditUrlKey }}}
  {{- end }}
  {{- if include "callgate.limitsOnRedis" . }}
  - name: CALLGATE_REDIS_URL
    valueFrom:
      secretKeyRef: {name: {{ .Values.redis.existingSecret }}, key: {{ .Values.redis.urlKey }}}
  {{- end }}
{{- end }}
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
{{- $_ := set $storage "url" (ternary "${CALLGATE_STORAGE_URL}" "sqlite:////data/callgate.db" (eq (include "callgate.storeOnPostgresql" .) "true")) -}}
{{- $_ := set $config "storage" $storage -}}
{{- $audit := default (dict) (get $config "audit") -}}
{{- $_ := set $audit "url" (ternary "${CALLGATE_AUDIT_URL}" "sqlite:////data/audit.db" (eq (include "callgate.auditOnPostgresql" .) "true")) -}}
{{- $_ := set $config "audit" $audit -}}
{{- if include "callgate.limitsOnRedis" . -}}
{{- $limits := default (dict) (get $config "limits") -}}
{{- $_ := set $limits "storage" "${CALLGATE_REDIS_URL}" -}}
{{- $_ := set $config "limits" $limits -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

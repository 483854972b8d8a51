{{/* Names, labels, the config file and the environment shared by the templates. */}}

{{- define "identity-broker.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "identity-broker.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "identity-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "identity-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "identity-broker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "identity-broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The serving pods; the migration Job's pods carry component "migrate" and are not selected. */}}
{{- define "identity-broker.serverSelectorLabels" -}}
{{ include "identity-broker.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "identity-broker.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The host the ingress serves: ingress.host, else the host of `hostname`. */}}
{{- define "identity-broker.publicHost" -}}
{{- .Values.ingress.host | default (urlParse .Values.hostname).host -}}
{{- end -}}

{{- define "identity-broker.issuer" -}}
{{- printf "%s/realms/%s" (trimSuffix "/" .Values.hostname) .Values.realm.name -}}
{{- end -}}

{{/* The chart's own Secret, made only for an inline azureDevOps.clientSecret. */}}
{{- define "identity-broker.inlineSecretName" -}}
{{- printf "%s-azure-devops" (include "identity-broker.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* BROKER_CLIENT_<CLIENT_ID>_SECRET, named as the broker names it: uppercase, non-alphanumerics as "_". */}}
{{- define "identity-broker.clientSecretEnv" -}}
{{- printf "BROKER_CLIENT_%s_SECRET" (regexReplaceAll "[^A-Za-z0-9]" . "_" | upper) -}}
{{- end -}}

{{/*
An environment variable read from a Secret: the item's own existingSecret/existingSecretKey, else
the top-level existingSecret and the key given.
Arguments: (dict "root" $ "env" NAME "item" ITEM "key" DEFAULT_KEY)
*/}}
{{- define "identity-broker.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .item.existingSecret | default .root.Values.existingSecret | quote }}
      key: {{ .item.existingSecretKey | default .key | quote }}
{{- end -}}

{{/* What the schema cannot say: checks across entries, each failing with the value to fix. */}}
{{- define "identity-broker.checks" -}}
{{- $envs := dict -}}
{{- range $kind, $list := dict "clients" .Values.clients "serviceAccounts" .Values.serviceAccounts -}}
{{- range $index, $entry := $list -}}
{{- $env := include "identity-broker.clientSecretEnv" $entry.clientId -}}
{{- if hasKey $envs $env -}}
{{- fail (printf "%s[%d].clientId %q: another client or service account already uses this id, or one the broker reads from the same variable %s" $kind $index $entry.clientId $env) -}}
{{- end -}}
{{- $_ := set $envs $env true -}}
{{- end -}}
{{- end -}}
{{- range $index, $account := .Values.serviceAccounts -}}
{{- range $account.allowedProviders -}}
{{- if not (and (eq . "azure_devops") $.Values.azureDevOps.enabled) -}}
{{- fail (printf "serviceAccounts[%d].allowedProviders: %q is not an enabled provider (the broker refuses to start); enable azureDevOps or remove it" $index .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with .Values.autoscaling -}}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int .minReplicas) (int .maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* config.toml: everything but secrets, which come from the environment (secretKeyRef). */}}
{{- define "identity-broker.config" -}}
# identity-broker configuration, rendered by the Helm chart from its values. No secret is in
# this file: the pods read each one from a Secret through an environment variable (see the
# Deployment), as they read the public hostname (values: hostname).

[http]
bind = "0.0.0.0:8080"
internal_bind = "0.0.0.0:8081"
management_bind = "0.0.0.0:9000"
header_read_timeout_seconds = {{ .Values.http.headerReadTimeoutSeconds | int64 }}
idle_timeout_seconds = {{ .Values.http.idleTimeoutSeconds | int64 }}
max_connections = {{ .Values.http.maxConnections | int64 }}
trusted_proxies = [{{ range $i, $cidr := .Values.http.trustedProxies }}{{ if $i }}, {{ end }}{{ $cidr | quote }}{{ end }}]

[database]
max_connections = {{ .Values.database.maxConnections | int64 }}
acquire_timeout_seconds = {{ .Values.database.acquireTimeoutSeconds | int64 }}
{{- if .Values.migration.enabled }}
# The chart's migration Job migrates before the pods of a new version start.
migrate = false
{{- else }}
migrate = true
{{- end }}

[realm]
name = {{ .Values.realm.name | toJson }}
access_token_lifespan_seconds = {{ .Values.realm.accessTokenLifespanSeconds | int64 }}
sso_session_idle_seconds = {{ .Values.realm.ssoSessionIdleSeconds | int64 }}
sso_session_max_seconds = {{ .Values.realm.ssoSessionMaxSeconds | int64 }}
offline_session_idle_seconds = {{ .Values.realm.offlineSessionIdleSeconds | int64 }}
signature_algorithm = {{ .Values.realm.signatureAlgorithm | default "RS256" | toJson }}
{{- range .Values.clients }}

[[clients]]
client_id = {{ .clientId | toJson }}
redirect_uris = {{ .redirectUris | default list | toJson }}
post_logout_redirect_uris = {{ .postLogoutRedirectUris | default list | toJson }}
{{- if .publicClient }}
public_client = true
{{- end }}
{{- if hasKey . "readToken" }}
read_token = {{ .readToken }}
{{- end }}
{{- if .rotateRefreshTokens }}
rotate_refresh_tokens = true
{{- end }}
{{- end }}
{{- range .Values.serviceAccounts }}

[[service_accounts]]
client_id = {{ .clientId | toJson }}
allowed_providers = {{ .allowedProviders | default list | toJson }}
{{- end }}

[providers.azure_devops]
{{- with .Values.azureDevOps }}
enabled = {{ .enabled }}
{{- if .enabled }}
display_name = {{ .displayName | toJson }}
tenant_id = {{ .tenantId | toJson }}
organization = {{ .organization | toJson }}
client_id = {{ .clientId | toJson }}
scopes = {{ .scopes | toJson }}
authority = {{ .authority | toJson }}
allowed_tenants = {{ .allowedTenants | default list | toJson }}
trust_email = {{ .trustEmail | default false }}
verified_email_domains = {{ .verifiedEmailDomains | default list | toJson }}
{{- end }}
{{- end }}

[vault]
refresh_before_expiry_seconds = {{ .Values.vault.refreshBeforeExpirySeconds | int64 }}
refresh_timeout_seconds = {{ .Values.vault.refreshTimeoutSeconds | int64 }}
max_refreshes_per_second = {{ .Values.vault.maxRefreshesPerSecond | default 50 | int64 }}
cache_megabytes = {{ .Values.vault.cacheMegabytes | int64 }}

[audit]
retention_days = {{ .Values.audit.retentionDays | int64 }}

[log]
format = {{ .Values.log.format | toJson }}
{{- with .Values.smtp }}
{{- if .enabled }}

[smtp]
host = {{ .host | toJson }}
port = {{ .port | int64 }}
from = {{ .from | toJson }}
security = {{ .security | toJson }}
{{- if .username }}
username = {{ .username | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The serving pods' environment. */}}
{{- define "identity-broker.env" -}}
- name: BROKER_HOSTNAME
  value: {{ .Values.hostname | quote }}
- name: RUST_LOG
  value: {{ .Values.log.level | quote }}
{{ include "identity-broker.secretEnv" (dict "root" . "env" "DATABASE_URL" "item" .Values.database "key" "database-url") }}
{{ include "identity-broker.secretEnv" (dict "root" . "env" "BROKER_ENCRYPTION_KEYS" "item" .Values.vault "key" "encryption-keys") }}
{{- if .Values.azureDevOps.enabled }}
{{- if .Values.azureDevOps.clientSecret }}
- name: AZURE_DEVOPS_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "identity-broker.inlineSecretName" . | quote }}
      key: client-secret
{{- else }}
{{ include "identity-broker.secretEnv" (dict "root" . "env" "AZURE_DEVOPS_CLIENT_SECRET" "item" .Values.azureDevOps "key" "azure-devops-client-secret") }}
{{- end }}
{{- end }}
{{- range .Values.clients }}
{{- if not .publicClient }}
{{ include "identity-broker.secretEnv" (dict "root" $ "env" (include "identity-broker.clientSecretEnv" .clientId) "item" . "key" (printf "client-%s-secret" .clientId)) }}
{{- end }}
{{- end }}
{{- range .Values.serviceAccounts }}
{{ include "identity-broker.secretEnv" (dict "root" $ "env" (include "identity-broker.clientSecretEnv" .clientId) "item" . "key" (printf "client-%s-secret" .clientId)) }}
{{- end }}
{{- if .Values.admin.enabled }}
- name: BROKER_ADMIN_USERNAME
  value: {{ .Values.admin.username | quote }}
{{ include "identity-broker.secretEnv" (dict "root" . "env" "BROKER_ADMIN_PASSWORD" "item" .Values.admin "key" "admin-password") }}
{{- end }}
{{- if and .Values.smtp.enabled .Values.smtp.username }}
{{ include "identity-broker.secretEnv" (dict "root" . "env" "BROKER_SMTP_PASSWORD" "item" .Values.smtp "key" "smtp-password") }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A NetworkPolicy peer from namespace and pod labels; namespaceLabels empty = this namespace. */}}
{{- define "identity-broker.peer" -}}
{{- if .namespaceLabels }}
- namespaceSelector:
    matchLabels:
      {{- toYaml .namespaceLabels | nindent 6 }}
  {{- with .podLabels }}
  podSelector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- else }}
- podSelector:
    matchLabels:
      {{- toYaml .podLabels | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The pod-level settings the Deployment and the migration Job share. */}}
{{- define "identity-broker.podCommon" -}}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

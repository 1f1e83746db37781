{{- define "llmbus.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmbus.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "llmbus.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llmbus.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The topic-safe model name, as llmbus.settings derives it. */}}
{{- define "llmbus.safeModel" -}}
{{- include "llmbus.safeName" .Values.model.name -}}
{{- end -}}

{{/* Any model name made topic-safe (llmbus.settings._safe): called with the name. */}}
{{- define "llmbus.safeName" -}}
{{- regexReplaceAll "[^A-Za-z0-9_-]" . "-" -}}
{{- end -}}

{{/* Settings every llmbus process reads (LLMBUS_*); secrets only by reference. */}}
{{- define "llmbus.env" -}}
{{- include "llmbus.envFor" (dict "root" . "model" .Values.model.name) -}}
{{- end -}}

{{/* The same settings for a process of another model (dict "root" . "model" NAME): each
variable once, since a second LLMBUS_MODEL would silently win over the first. */}}
{{- define "llmbus.envFor" -}}
{{- with .root -}}
- name: LLMBUS_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: LLMBUS_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: LLMBUS_MODEL
  value: {{ $.model | quote }}
- name: LLMBUS_MAX_N
  value: {{ .Values.model.maxN | quote }}
- name: LLMBUS_TOOL_CALL_PARSER
  value: {{ .Values.model.toolCallParser | quote }}
- name: LLMBUS_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
- name: LLMBUS_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- include "llmbus.topicEnv" . }}
{{- if .Values.kafka.saslMechanism }}
- name: LLMBUS_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.saslMechanism | quote }}
{{- end }}
{{- if .Values.kafka.existingSecret }}
- name: LLMBUS_KAFKA_SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ .Values.kafka.existingSecret }}, key: username}}
- name: LLMBUS_KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.kafka.existingSecret }}, key: password}}
{{- end }}
{{- include "llmbus.redactionEnv" . }}
{{- end }}
{{- end -}}

{{/* The topics' shape: the partitions a process creates a missing topic with (the same as
the KafkaTopics'), and the replication it checks llmbus's topics for at start. */}}
{{- define "llmbus.topicEnv" -}}
{{- with .Values.kafka }}
- name: LLMBUS_REQUEST_PARTITIONS
  value: {{ .requestPartitions | int64 | quote }}
- name: LLMBUS_REPLY_PARTITIONS
  value: {{ .replyPartitions | int64 | quote }}
- name: LLMBUS_TOPIC_REPLICATION_FACTOR
  value: {{ .replicationFactor | int64 | quote }}
- name: LLMBUS_TOPIC_MIN_INSYNC_REPLICAS
  value: {{ .minInsyncReplicas | int64 | quote }}
- name: LLMBUS_TOPIC_CHECK
  value: {{ .topicCheck | quote }}
{{- end }}
{{- end -}}

{{/* Redaction of the audit trail and of log lines: every long-running process logs. */}}
{{- define "llmbus.redactionEnv" -}}
{{- with .Values.audit.redaction }}
{{- if not (kindIs "invalid" .enabled) }}
- name: LLMBUS_REDACT
  value: {{ .enabled | quote }}
{{- end }}
{{- with .patterns }}
- name: LLMBUS_REDACT_PATTERNS
  value: {{ toRawJson . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "llmbus.databaseEnv" -}}
- name: LLMBUS_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.database.existingSecret }}, key: database-url}}
{{- end -}}

{{/* The schema owner's connection: migrations and the audit trail's partition maintenance. */}}
{{- define "llmbus.migrationDatabaseEnv" -}}
- name: LLMBUS_MIGRATION_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.database.existingSecret }}, key: migration-database-url}}
{{- end -}}

{{/* What both the auditor and the maintenance job do ahead of time or late: make daily
partitions and blank old rows' content. Each only when set, so null keeps the application's
default. */}}
{{- define "llmbus.auditEnv" -}}
{{- with .Values.audit }}
{{- if not (kindIs "invalid" .contentRetentionDays) }}
- name: LLMBUS_AUDIT_CONTENT_RETENTION_DAYS
  value: {{ .contentRetentionDays | quote }}
{{- end }}
{{- if not (kindIs "invalid" .partitionsAheadDays) }}
- name: LLMBUS_AUDIT_PARTITIONS_AHEAD_DAYS
  value: {{ .partitionsAheadDays | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "llmbus.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  fsGroup: 10001
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "llmbus.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/*
What every vLLM worker Deployment shares, chat or embedding. Called with
(dict "root" . "cfg" <its values block> "model" NAME "path" MODEL_PATH).
*/}}

{{/* Its env: the shared settings for its model, then the engine's and the shutdown's. */}}
{{- define "llmbus.workerEnv" -}}
{{- include "llmbus.envFor" (dict "root" .root "model" .model) }}
- name: LLMBUS_MAX_NUM_SEQS
  value: {{ .cfg.maxNumSeqs | quote }}
- name: LLMBUS_SHUTDOWN_GRACE_S
  value: {{ sub .cfg.terminationGracePeriodSeconds 10 | quote }}
- name: LLMBUS_CACHE_DIR
  value: /cache
- name: HOME
  value: /cache
{{- if .path }}
- name: LLMBUS_MODEL_PATH
  value: {{ .path | quote }}
{{- end }}
{{- end -}}

{{/* Its pod's scheduling, from the values block's nodeSelector, tolerations, affinity. */}}
{{- define "llmbus.workerScheduling" -}}
{{- with .cfg.nodeSelector }}
nodeSelector: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.tolerations }}
tolerations: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.affinity }}
affinity: {{ toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Its container's resources, with the GPU limit added when gpu.enabled. */}}
{{- define "llmbus.workerResources" -}}
{{- $res := deepCopy .cfg.resources }}
{{- if .cfg.gpu.enabled }}
{{- $_ := set $res "limits" (merge (dict .cfg.gpu.resourceName (toString .cfg.gpu.count)) (default (dict) $res.limits)) }}
{{- end }}
{{- toYaml $res }}
{{- end -}}

{{- define "llmbus.workerVolumeMounts" -}}
- {name: cache, mountPath: /cache}
- {name: shm, mountPath: /dev/shm}
{{- if .root.Values.model.volume.enabled }}
- {name: models, mountPath: {{ .root.Values.model.volume.mountPath }}, readOnly: true}
{{- end }}
{{- end -}}

{{- define "llmbus.workerVolumes" -}}
- {name: cache, emptyDir: {}}
# vLLM's worker processes exchange tensors through shared memory.
- {name: shm, emptyDir: {medium: Memory, sizeLimit: 2Gi}}
{{- if .root.Values.model.volume.enabled }}
- name: models
  persistentVolumeClaim: {claimName: {{ required "model.volume.existingClaim is required when the model volume is enabled" .root.Values.model.volume.existingClaim }}}
{{- end }}
{{- end -}}

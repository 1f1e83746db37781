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
{{- regexReplaceAll "[^A-Za-z0-9_-]" .Values.model.name "-" -}}
{{- end -}}

{{/* Settings every llmbus process reads (LLMBUS_*); secrets only by reference. */}}
{{- define "llmbus.env" -}}
- name: LLMBUS_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: LLMBUS_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: LLMBUS_MODEL
  value: {{ .Values.model.name | quote }}
- name: LLMBUS_MAX_N
  value: {{ .Values.model.maxN | quote }}
- name: LLMBUS_TOOL_CALL_PARSER
  value: {{ .Values.model.toolCallParser | quote }}
- name: LLMBUS_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
- name: LLMBUS_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
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
{{- end -}}

{{- define "llmbus.databaseEnv" -}}
- name: LLMBUS_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.database.existingSecret }}, key: database-url}}
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

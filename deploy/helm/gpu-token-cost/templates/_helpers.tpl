{{- define "gtc.name" -}}{{ .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}

{{- define "gtc.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "gtc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "gtc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "processor") */}}
{{- define "gtc.selector" -}}
app.kubernetes.io/name: {{ include "gtc.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gtc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "gtc.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* Non-root (the images' uid 10001), no privilege escalation, read-only root, no capabilities. */}}
{{- define "gtc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gtc.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
Environment of one component: the chart's own settings (base), overridden by the user's `env`
map, plus VARIABLE_FILE for every secretFiles entry. A variable given both in env and in
secretFiles is refused here, as the settings would refuse it at start.
Args: (dict "base" dict "env" map "secretFiles" map "component" name)
*/}}
{{- define "gtc.env" -}}
{{- $all := merge (deepCopy (default dict .env)) .base -}}
{{- range $name := keys .secretFiles | sortAlpha }}
{{- if hasKey $all $name }}
{{- fail (printf "%s: %s is set both in env and in secretFiles; set only one" $.component $name) }}
{{- end }}
{{- end }}
{{- range $name := keys $all | sortAlpha }}
- name: {{ $name }}
  value: {{ index $all $name | toString | quote }}
{{- end }}
{{- range $name := keys .secretFiles | sortAlpha }}
- name: {{ $name }}_FILE
  value: {{ printf "/run/secrets/gtc/%s" ($name | lower) | quote }}
{{- end }}
{{- end -}}

{{/* One projected volume holding every secretFiles key, at /run/secrets/gtc/<variable>. */}}
{{- define "gtc.secretVolume" -}}
{{- if .secretFiles }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
{{- range $name := keys .secretFiles | sortAlpha }}
{{- $ref := index $.secretFiles $name }}
      - secret:
          name: {{ $ref.secret }}
          items:
            - key: {{ $ref.key }}
              path: {{ $name | lower }}
{{- end }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "gtc.secretMount" -}}
{{- if .secretFiles }}
- name: secrets
  mountPath: /run/secrets/gtc
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The processor's secretFiles: mongo.existingSecret becomes MONGO_URL unless given otherwise. */}}
{{- define "gtc.processorSecretFiles" -}}
{{- $files := deepCopy (default dict .Values.processor.secretFiles) -}}
{{- if and .Values.mongo.existingSecret (not (hasKey $files "MONGO_URL")) (not (hasKey .Values.processor.env "MONGO_URL")) -}}
{{- $_ := set $files "MONGO_URL" (dict "secret" .Values.mongo.existingSecret "key" .Values.mongo.urlKey) -}}
{{- end -}}
{{- if not (or (hasKey $files "MONGO_URL") (hasKey .Values.processor.env "MONGO_URL")) -}}
{{- fail "mongo.existingSecret is required: the name of a Secret holding the MongoDB URL (key mongo.urlKey), or set processor.secretFiles.MONGO_URL" -}}
{{- end -}}
{{- toYaml $files -}}
{{- end -}}

{{/* The processor's liveness check (see processor.yaml), as an exec command in JSON form. */}}
{{- define "gtc.livenessCommand" -}}
{{- $script := printf `import json, sys, urllib.error, urllib.request
try:
    body = urllib.request.urlopen("http://127.0.0.1:%d/health", timeout=8).read()
except urllib.error.HTTPError as exc:
    body = exc.read()
since = json.loads(body)["consumer"]["seconds_since_poll"]
sys.exit(0 if since is not None and since < %d else 1)` (int .Values.processor.port) (int .Values.processor.liveness.stuckAfterSeconds) -}}
{{- list "python" "-c" $script | toJson -}}
{{- end -}}

{{/* NetworkPolicy peers and egress rules of one block: {port, namespaceSelector, podSelector, cidrs}. */}}
{{- define "gtc.peers" -}}
{{- $peers := list -}}
{{- if or .namespaceSelector .podSelector -}}
{{- $peer := dict -}}
{{- with .namespaceSelector }}{{ $_ := set $peer "namespaceSelector" . }}{{ end -}}
{{- with .podSelector }}{{ $_ := set $peer "podSelector" . }}{{ end -}}
{{- $peers = append $peers $peer -}}
{{- end -}}
{{- range .cidrs }}{{ $peers = append $peers (dict "ipBlock" (dict "cidr" .)) }}{{ end -}}
{{- if $peers }}{{ toYaml $peers }}{{ end -}}
{{- end -}}
{{- define "gtc.egressTo" -}}
- ports:
    - {port: {{ .port }}, protocol: TCP}
  {{- $peers := include "gtc.peers" . }}
  {{- if $peers }}
  to:
    {{- $peers | nindent 4 }}
  {{- end }}
{{- end -}}
{{- define "gtc.dns" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}

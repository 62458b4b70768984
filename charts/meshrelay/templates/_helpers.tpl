{{/*
The image tag: image.tag, else v<appVersion> (the release's tag).
*/}}
{{- define "meshrelay.tag" -}}
{{- .Values.image.tag | default (printf "v%s" .Chart.AppVersion) -}}
{{- end -}}

{{- define "meshrelay.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "meshrelay.tag" .) -}}
{{- with .Values.image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/*
meshrelay.labels: the app.kubernetes.io labels of one object, the same set
the kustomize bases and components/labels give it. Call with
(dict "root" $ "name" "relay-server" "component" "server").
*/}}
{{- define "meshrelay.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ include "meshrelay.tag" .root | quote }}
app.kubernetes.io/part-of: meshrelay
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The relay secret names, each from its values key with the product's default. */}}
{{- define "meshrelay.rootSecret" -}}
{{- if .Values.glooAgent.enabled -}}{{ .Values.glooAgent.relay.rootTlsSecret.name | default "relay-root-tls-secret" }}{{- else -}}{{ .Values.glooMgmtServer.relay.rootTlsSecret.name | default "relay-root-tls-secret" }}{{- end -}}
{{- end -}}
{{- define "meshrelay.serverSecret" -}}{{ .Values.glooMgmtServer.relay.tlsSecret.name | default "relay-server-tls-secret" }}{{- end -}}
{{- define "meshrelay.signingSecret" -}}{{ .Values.glooMgmtServer.relay.signingTlsSecret.name | default "relay-tls-signing-secret" }}{{- end -}}
{{- define "meshrelay.clientSecret" -}}{{ .Values.glooAgent.relay.clientTlsSecret.name | default "relay-client-tls-secret" }}{{- end -}}
{{- define "meshrelay.tokenSecret" -}}
{{- if .Values.glooAgent.enabled -}}{{ .Values.glooAgent.relay.tokenSecret.name | default "relay-identity-token-secret" }}{{- else -}}{{ .Values.glooMgmtServer.relay.tokenSecret.name | default "relay-identity-token-secret" }}{{- end -}}
{{- end -}}
{{- define "meshrelay.tokenKey" -}}
{{- if .Values.glooAgent.enabled -}}{{ .Values.glooAgent.relay.tokenSecret.key | default "token" }}{{- else -}}{{ .Values.glooMgmtServer.relay.tokenSecret.key | default "token" }}{{- end -}}
{{- end -}}

{{/* The agent's server address: serverAddress, else <authority>:9900. */}}
{{- define "meshrelay.serverAddress" -}}
{{- .Values.glooAgent.relay.serverAddress | default (printf "%s:9900" (.Values.glooAgent.relay.authority | default "gloo-mesh-mgmt-server.gloo-mesh")) -}}
{{- end -}}

{{/*
meshrelay.secretFlags: the flags naming the relay secrets that differ from
the binaries' defaults (a default install passes none, as the kustomize
bases do). Call with (dict "root" $ "secrets" (list "root" "client" ...)).
*/}}
{{- define "meshrelay.secretFlags" -}}
{{- $r := .root -}}
{{- range .secrets }}
{{- if eq . "root" }}{{ $n := include "meshrelay.rootSecret" $r }}{{ if ne $n "relay-root-tls-secret" }}
- --root-tls-secret={{ $n }}
{{- end }}{{ end }}
{{- if eq . "server" }}{{ $n := include "meshrelay.serverSecret" $r }}{{ if ne $n "relay-server-tls-secret" }}
- --tls-secret={{ $n }}
{{- end }}{{ end }}
{{- if eq . "signing" }}{{ $n := include "meshrelay.signingSecret" $r }}{{ if ne $n "relay-tls-signing-secret" }}
- --signing-tls-secret={{ $n }}
{{- end }}{{ end }}
{{- if eq . "client" }}{{ $n := include "meshrelay.clientSecret" $r }}{{ if ne $n "relay-client-tls-secret" }}
- --client-tls-secret={{ $n }}
{{- end }}{{ end }}
{{- if eq . "token" }}{{ $n := include "meshrelay.tokenSecret" $r }}{{ if ne $n "relay-identity-token-secret" }}
- --token-secret={{ $n }}
{{- end }}{{ $k := include "meshrelay.tokenKey" $r }}{{ if ne $k "token" }}
- --token-secret-key={{ $k }}
{{- end }}{{ end }}
{{- if eq . "ratio" }}{{ with $r.Values.glooAgent.relay.clientTlsSecretRotationGracePeriodRatio }}
- --client-tls-secret-rotation-grace-period-ratio={{ . }}
{{- end }}{{ end }}
{{- end }}
{{- end -}}

{{/* meshrelay.spread: the Deployments' topology spread, by host then zone. */}}
{{- define "meshrelay.spread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        app.kubernetes.io/name: {{ . }}
    matchLabelKeys: [pod-template-hash]
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        app.kubernetes.io/name: {{ . }}
    matchLabelKeys: [pod-template-hash]
{{- end -}}

{{/* meshrelay.metricsIngress: 9091 only from namespaces that scrape metrics. */}}
{{- define "meshrelay.metricsIngress" -}}
- ports:
    - protocol: TCP
      port: 9091
  from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: monitoring
    - namespaceSelector:
        matchLabels:
          meshrelay.dev/monitoring: "true"
{{- end -}}

{{/* meshrelay.containerSecurity: the restricted Pod Security profile. */}}
{{- define "meshrelay.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  seccompProfile:
    type: RuntimeDefault
{{- end -}}
{{- define "meshrelay.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{- define "meshrelay.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
{{- end -}}

{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "wsgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name alone when it already
contains the chart name.
*/}}
{{- define "wsgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the Service of the internal port: <full name>-internal, within the
63 characters of a Service name.
*/}}
{{- define "wsgate.internalName" -}}
{{- printf "%s-internal" (include "wsgate.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
Chart label value: name-version.
*/}}
{{- define "wsgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of the release (never add to them).
*/}}
{{- define "wsgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "wsgate.labels" -}}
helm.sh/chart: {{ include "wsgate.chart" . }}
{{ include "wsgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: wsgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "wsgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wsgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest, or repository:tag (tag defaults to the
chart's appVersion).
*/}}
{{- define "wsgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret the chart creates for inline credentials.
*/}}
{{- define "wsgate.secretName" -}}
{{- include "wsgate.fullname" . }}
{{- end }}

{{/*
True ("true") when any credential is given inline, so the chart must create
its Secret.
*/}}
{{- define "wsgate.createSecret" -}}
{{- $inlineKeys := false }}
{{- range .Values.jwt.additionalPublicKeys }}
{{- if .publicKey }}{{ $inlineKeys = true }}{{ end }}
{{- end }}
{{- if or .Values.jwt.secret .Values.jwt.publicKey .Values.apiKeys.keys .Values.redis.url $inlineKeys -}}
true
{{- end }}
{{- end }}

{{/*
The JWT key source: a dict with name (Secret name) and key (key inside it),
or an empty dict with keyType=jwks (the keys come from jwt.jwksUrl, which
is no secret and goes into wsgate.toml). Validates that exactly one source
is given for the chosen keyType.
*/}}
{{- define "wsgate.jwtSource" -}}
{{- $jwt := .Values.jwt }}
{{- if not (has $jwt.keyType (list "secret" "publicKey" "jwks")) }}
{{- fail (printf "wsgate: jwt.keyType must be \"secret\", \"publicKey\" or \"jwks\", not %q" (toString $jwt.keyType)) }}
{{- end }}
{{- if eq $jwt.keyType "jwks" }}
{{- if or $jwt.secret $jwt.publicKey $jwt.existingSecret $jwt.existingSecretKey }}
{{- fail "wsgate: jwt.keyType is \"jwks\": the keys come from jwt.jwksUrl, so leave jwt.secret, jwt.publicKey, jwt.existingSecret and jwt.existingSecretKey empty (to keep an older key while moving to the identity provider: jwt.additionalPublicKeys, jwt.fallbackSecrets)" }}
{{- end }}
{{- if not $jwt.jwksUrl }}
{{- fail "wsgate: no token key. jwt.keyType is \"jwks\" but jwt.jwksUrl is empty: set it to your identity provider's jwks_uri (e.g. https://auth.example.com/.well-known/jwks.json)" }}
{{- end }}
{{- dict | toJson }}
{{- else }}
{{- if $jwt.jwksUrl }}
{{- fail (printf "wsgate: jwt.jwksUrl is set but jwt.keyType is %q: set jwt.keyType=jwks to verify tokens with the key set (and drop the %s key)" $jwt.keyType $jwt.keyType) }}
{{- end }}
{{- $inline := ternary $jwt.secret $jwt.publicKey (eq $jwt.keyType "secret") }}
{{- $other := ternary $jwt.publicKey $jwt.secret (eq $jwt.keyType "secret") }}
{{- $defaultKey := ternary "jwt-secret" "jwt-public-key.pem" (eq $jwt.keyType "secret") }}
{{- if $other }}
{{- fail (printf "wsgate: jwt.keyType is %q, but jwt.%s is set: give only the key that matches keyType" $jwt.keyType (ternary "publicKey" "secret" (eq $jwt.keyType "secret"))) }}
{{- end }}
{{- if and $inline $jwt.existingSecret }}
{{- fail "wsgate: set either an inline JWT key (jwt.secret / jwt.publicKey) or jwt.existingSecret, not both" }}
{{- end }}
{{- if not (or $inline $jwt.existingSecret) }}
{{- fail (printf "wsgate: no token key. wsgate has no built-in secret and refuses to start without one: set jwt.existingSecret (a Secret with key %q), or jwt.%s, or jwt.keyType=jwks with jwt.jwksUrl (your identity provider's key set)" (default $defaultKey $jwt.existingSecretKey) (ternary "secret (HS256, at least 32 characters)" "publicKey (PEM)" (eq $jwt.keyType "secret"))) }}
{{- end }}
{{- if and (eq $jwt.keyType "secret") $jwt.secret (lt (len $jwt.secret) 32) }}
{{- fail "wsgate: jwt.secret is shorter than 32 characters; HS256 needs a key of at least 256 bits (e.g. openssl rand -base64 48)" }}
{{- end }}
{{- if and (eq $jwt.keyType "publicKey") $jwt.publicKey (not (contains "-----BEGIN" $jwt.publicKey)) }}
{{- fail "wsgate: jwt.publicKey must be a PEM public key (-----BEGIN PUBLIC KEY-----...)" }}
{{- end }}
{{- if $jwt.existingSecret }}
{{- dict "name" $jwt.existingSecret "key" (default $defaultKey $jwt.existingSecretKey) | toJson }}
{{- else }}
{{- dict "name" (include "wsgate.secretName" .) "key" $defaultKey | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Fails when config.jwt.algorithms, not empty, leaves a configured key no
algorithm of its type: wsgate would ignore that key without a word (a key
verifies only the allowed algorithms of its family), or refuse to start
when no key is left. And when it allows an algorithm of a family (HMAC, or
public keys) no configured key belongs to: wsgate refuses to start (exit
64) unless a JWKS may hold it. Within public keys (RSA, EC, Ed25519) the
type of a key in a Secret is not known here: wsgate names the algorithm.
*/}}
{{- define "wsgate.checkAlgorithms" -}}
{{- $algorithms := .Values.config.jwt.algorithms | default list }}
{{- if $algorithms }}
{{- $hmac := list }}
{{- $public := list }}
{{- range $algorithms }}
{{- if hasPrefix "HS" (toString .) }}
{{- $hmac = append $hmac . }}
{{- else }}
{{- $public = append $public . }}
{{- end }}
{{- end }}
{{- $jwt := .Values.jwt }}
{{- $needPublic := list }}
{{- if eq $jwt.keyType "jwks" }}{{ $needPublic = append $needPublic "the key set of jwt.jwksUrl (no pod would turn ready)" }}{{ end }}
{{- if eq $jwt.keyType "publicKey" }}{{ $needPublic = append $needPublic "the public key of jwt.*" }}{{ end }}
{{- if $jwt.additionalPublicKeys }}{{ $needPublic = append $needPublic "jwt.additionalPublicKeys" }}{{ end }}
{{- if and $needPublic (not $public) }}
{{- fail (printf "wsgate: config.jwt.algorithms %v names only HMAC algorithms, which no public key verifies: wsgate would ignore %s. Add the keys' algorithm (e.g. RS256), or leave the list empty" $algorithms (join " and " $needPublic)) }}
{{- end }}
{{- $needHmac := list }}
{{- if eq $jwt.keyType "secret" }}{{ $needHmac = append $needHmac "the HMAC secret of jwt.*" }}{{ end }}
{{- if $jwt.fallbackSecrets.existingSecret }}{{ $needHmac = append $needHmac "jwt.fallbackSecrets" }}{{ end }}
{{- if and $needHmac (not $hmac) }}
{{- fail (printf "wsgate: config.jwt.algorithms %v names no HMAC algorithm (HS256, HS384, HS512): wsgate would ignore %s. Add HS256, or leave the list empty" $algorithms (join " and " $needHmac)) }}
{{- end }}
{{- if ne $jwt.keyType "jwks" }}
{{- if and $hmac (not $needHmac) }}
{{- fail (printf "wsgate: config.jwt.algorithms allows %v, but no HMAC secret is configured (jwt.keyType=secret, jwt.fallbackSecrets): wsgate refuses to start with an allowed algorithm no key verifies. Drop it from the list, or add the secret" $hmac) }}
{{- end }}
{{- if and $public (not $needPublic) }}
{{- fail (printf "wsgate: config.jwt.algorithms allows %v, but no public key is configured (jwt.keyType=publicKey or jwks, jwt.additionalPublicKeys): wsgate refuses to start with an allowed algorithm no key verifies. Drop it from the list, or add the key" $public) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
jwt.additionalPublicKeys as {"keys": [{kid, name, key, path}]}: the Secret
and key each comes from, and the file it is mounted as under
/etc/wsgate/jwt-keys. Inline keys live in the chart's Secret as
jwt-additional-public-key-<index>.pem.
*/}}
{{- define "wsgate.additionalPublicKeys" -}}
{{- $keys := list }}
{{- $kids := dict }}
{{- range $i, $k := .Values.jwt.additionalPublicKeys }}
{{- $where := printf "jwt.additionalPublicKeys[%d]" $i }}
{{- if eq (not $k.publicKey) (not $k.existingSecret) }}
{{- fail (printf "wsgate: %s needs either publicKey (an inline PEM) or existingSecret (a Secret holding it), not both and not neither" $where) }}
{{- end }}
{{- if and $k.existingSecretKey (not $k.existingSecret) }}
{{- fail (printf "wsgate: %s.existingSecretKey names a key of existingSecret, which is not set" $where) }}
{{- end }}
{{- if and $k.publicKey (not (contains "-----BEGIN" $k.publicKey)) }}
{{- fail (printf "wsgate: %s.publicKey must be a PEM public key (-----BEGIN PUBLIC KEY-----...)" $where) }}
{{- end }}
{{- $kid := "" }}
{{- if not (kindIs "invalid" $k.kid) }}
{{- $kid = toString $k.kid }}
{{- end }}
{{- if $kid }}
{{- if hasKey $kids $kid }}
{{- fail (printf "wsgate: %s: kid %q is given twice; a kid names one key" $where $kid) }}
{{- end }}
{{- $_ := set $kids $kid true }}
{{- end }}
{{- $source := dict "name" (include "wsgate.secretName" $) "key" (printf "jwt-additional-public-key-%d.pem" $i) }}
{{- if $k.existingSecret }}
{{- $source = dict "name" $k.existingSecret "key" (default "jwt-public-key.pem" $k.existingSecretKey) }}
{{- end }}
{{- $keys = append $keys (merge $source (dict "kid" $kid "path" (printf "key-%d.pem" $i))) }}
{{- end }}
{{- dict "keys" $keys | toJson }}
{{- end }}

{{/*
WSGATE_JWT_PUBLIC_KEY_FILES of the additional public keys ("kid=path" or
"path", comma-separated), given the list of wsgate.additionalPublicKeys.
*/}}
{{- define "wsgate.publicKeyFiles" -}}
{{- $items := list }}
{{- range . }}
{{- $path := printf "/etc/wsgate/jwt-keys/%s" .path }}
{{- $items = append $items (ternary (printf "%s=%s" .kid $path) $path (ne .kid "")) }}
{{- end }}
{{- join "," $items }}
{{- end }}

{{/*
The fallback HMAC secrets' source, or an empty dict.
*/}}
{{- define "wsgate.fallbackSecretsSource" -}}
{{- $fb := .Values.jwt.fallbackSecrets }}
{{- if $fb.existingSecret }}
{{- dict "name" $fb.existingSecret "key" (default "jwt-fallback-secrets" $fb.existingSecretKey) | toJson }}
{{- else }}
{{- dict | toJson }}
{{- end }}
{{- end }}

{{/*
The API keys source, or an empty dict when the server API is off.
*/}}
{{- define "wsgate.apiKeysSource" -}}
{{- $api := .Values.apiKeys }}
{{- if and $api.keys $api.existingSecret }}
{{- fail "wsgate: set either apiKeys.keys or apiKeys.existingSecret, not both" }}
{{- end }}
{{- range $api.keys }}
{{- if lt (len (toString .)) 16 }}
{{- fail "wsgate: every entry of apiKeys.keys needs at least 16 characters (wsgate refuses shorter keys at start)" }}
{{- end }}
{{- if contains "," (toString .) }}
{{- fail "wsgate: apiKeys.keys entries must not contain commas (WSGATE_API_KEYS is comma-separated)" }}
{{- end }}
{{- end }}
{{- if $api.existingSecret }}
{{- dict "name" $api.existingSecret "key" (default "api-keys" $api.existingSecretKey) | toJson }}
{{- else if $api.keys }}
{{- dict "name" (include "wsgate.secretName" .) "key" "api-keys" | toJson }}
{{- else }}
{{- dict | toJson }}
{{- end }}
{{- end }}

{{/*
Most pods that can run at once: maxReplicas with autoscaling, else
replicaCount.
*/}}
{{- define "wsgate.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- int .Values.autoscaling.maxReplicas }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/*
The Redis URL source, or an empty dict for the embedded memory broker. Fails
when more than one replica may run without Redis.
*/}}
{{- define "wsgate.redisSource" -}}
{{- $redis := .Values.redis }}
{{- if and $redis.url $redis.existingSecret }}
{{- fail "wsgate: set either redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- if and $redis.url (not (or (hasPrefix "redis://" $redis.url) (hasPrefix "rediss://" $redis.url))) }}
{{- fail "wsgate: redis.url must start with redis:// or rediss:// (TLS); list several seeds comma-separated, and set config.redis.mode for a cluster or Sentinels" }}
{{- end }}
{{- if and $redis.url $redis.caExistingSecret (not (hasPrefix "rediss://" $redis.url)) }}
{{- fail "wsgate: redis.caExistingSecret verifies TLS, but redis.url is not rediss:// (wsgate would exit 64)" }}
{{- end }}
{{- $max := include "wsgate.maxReplicas" . | int }}
{{- if and (gt $max 1) (not (or $redis.url $redis.existingSecret)) }}
{{- fail (printf "wsgate: %d replicas need Redis. Without redis.url or redis.existingSecret wsgate runs its embedded in-memory broker, which is single-node: an event published on one pod would never reach the sockets on the others. Set redis.url / redis.existingSecret, or run one replica (replicaCount=1, autoscaling.enabled=false)." $max) }}
{{- end }}
{{- if $redis.existingSecret }}
{{- dict "name" $redis.existingSecret "key" (default "redis-url" $redis.existingSecretKey) | toJson }}
{{- else if $redis.url }}
{{- dict "name" (include "wsgate.secretName" .) "key" "redis-url" | toJson }}
{{- else }}
{{- dict | toJson }}
{{- end }}
{{- end }}

{{/*
preStop sleep, drain window and the termination grace period derived from
them. wsgate waits drain_s + 5 s for sockets, closes what is left and waits
up to 5 s more, then stops the runtime (1 s): drain_s + 11 s at most.
*/}}
{{- define "wsgate.preStopSleep" -}}
{{- int (default 0 .Values.lifecycle.preStopSleepSeconds) }}
{{- end }}

{{- define "wsgate.terminationGracePeriod" -}}
{{- $sleep := include "wsgate.preStopSleep" . | int }}
{{- $drain := int .Values.config.shutdown.drain_s }}
{{- $minimum := add $sleep $drain 11 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $sleep $drain 15 }}
{{- else }}
{{- $given := int .Values.terminationGracePeriodSeconds }}
{{- if lt $given $minimum }}
{{- fail (printf "wsgate: terminationGracePeriodSeconds=%d is shorter than preStopSleepSeconds (%d) + config.shutdown.drain_s (%d) + 11 s = %d: the kubelet would SIGKILL the pod mid-drain and its clients would not get a 1012 close. Raise it, or leave it empty to have it computed." $given $sleep $drain $minimum) }}
{{- end }}
{{- $given }}
{{- end }}
{{- end }}

{{/*
preStop handler, or nothing when preStopSleepSeconds is 0.
*/}}
{{- define "wsgate.preStop" -}}
{{- $sleep := include "wsgate.preStopSleep" . | int }}
{{- if gt $sleep 0 }}
{{- $mode := .Values.lifecycle.preStopMode }}
{{- if eq $mode "auto" }}
{{- $mode = ternary "sleepAction" "exec" (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if eq $mode "sleepAction" }}
sleep:
  seconds: {{ $sleep }}
{{- else if eq $mode "exec" }}
exec:
  command: ["sleep", "{{ $sleep }}"]
{{- else }}
{{- fail (printf "wsgate: lifecycle.preStopMode must be auto, sleepAction or exec, not %q" (toString $mode)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Probe scheme: HTTPS when wsgate terminates TLS itself.
*/}}
{{- define "wsgate.probeScheme" -}}
{{- ternary "HTTPS" "HTTP" (.Values.tls.enabled | default false) }}
{{- end }}

{{/*
A TOML string (JSON string escapes are valid TOML basic-string escapes).
*/}}
{{- define "wsgate.tomlString" -}}
{{- toString . | toJson }}
{{- end }}

{{/*
A TOML array of strings.
*/}}
{{- define "wsgate.tomlStrings" -}}
{{- $items := list }}
{{- range . }}
{{- $items = append $items (toString .) }}
{{- end }}
{{- $items | toJson }}
{{- end }}

{{/*
A TOML float (accepts ints and floats from values).
*/}}
{{- define "wsgate.tomlFloat" -}}
{{- $f := float64 . }}
{{- if eq $f (floor $f) }}
{{- printf "%.1f" $f }}
{{- else }}
{{- toString $f }}
{{- end }}
{{- end }}

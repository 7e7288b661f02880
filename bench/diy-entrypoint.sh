#!/bin/sh
# The do-it-yourself entrypoint users write instead of svid-exec: log in with
# the JWT from a file, list the secrets, export them, exec the program.
# Used by bench/run.sh as a point of comparison; it has none of svid-exec's
# checks (imports, retries, empty-result refusal, name validation, ...).
set -eu
api="${INFISICAL_API_URL%/}"
curl_tls=""
[ -n "${SVID_EXEC_CA_CERT:-}" ] && curl_tls="--cacert $SVID_EXEC_CA_CERT"
jwt=$(cat "$SVID_EXEC_JWT_FILE")
# shellcheck disable=SC2086
token=$(curl -fsS $curl_tls -X POST "$api/api/v1/auth/oidc-auth/login" \
  -H 'Content-Type: application/json' \
  -d "{\"identityId\":\"$INFISICAL_MACHINE_IDENTITY_ID\",\"jwt\":\"$jwt\"}" | jq -r .accessToken)
# shellcheck disable=SC2086
exports=$(curl -fsS $curl_tls -H "Authorization: Bearer $token" \
  "$api/api/v4/secrets?projectId=$INFISICAL_PROJECT_ID&environment=$INFISICAL_ENVIRONMENT&secretPath=/&expandSecretReferences=true&includeImports=false&recursive=false&viewSecretValue=true" |
  jq -r '.secrets[] | "export \(.secretKey)=\(.secretValue | @sh)"')
eval "$exports"
exec "$@"

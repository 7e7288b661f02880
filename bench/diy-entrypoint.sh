#!/bin/sh
# The do-it-yourself entrypoint users write instead of svid-exec: log in with
# the JWT from a file, list the secrets, export them, exec the program.
# Used by bench/run.sh as a point of comparison; it has none of svid-exec's
# checks (imports, retries, empty-result refusal, name validation, ...), but it
# does the minimum a careful author would: stop on any HTTP or parse failure
# (no pipeline hides curl's status) and keep the JWT and the access token out
# of curl's argv (visible in /proc to every user) by passing them on stdin.
#   usage: SVID_EXEC_JWT_FILE=... INFISICAL_API_URL=... INFISICAL_MACHINE_IDENTITY_ID=...
#          INFISICAL_PROJECT_ID=... INFISICAL_ENVIRONMENT=... [SVID_EXEC_CA_CERT=...]
#          diy-entrypoint.sh PROGRAM [ARGS...]
set -eu
api="${INFISICAL_API_URL%/}"
if [ -n "${SVID_EXEC_CA_CERT:-}" ]; then
  set -- --cacert "$SVID_EXEC_CA_CERT" -- "$@"
else
  set -- -- "$@"
fi
# "$@" is now: [--cacert CA] -- PROGRAM ARGS; curl's options are the part before "--".
curl_opts=""
while [ "$1" != "--" ]; do
  curl_opts="$curl_opts $1"
  shift
done
shift
jwt=$(cat "$SVID_EXEC_JWT_FILE")
# shellcheck disable=SC2086
login=$(printf '{"identityId":"%s","jwt":"%s"}' "$INFISICAL_MACHINE_IDENTITY_ID" "$jwt" |
  curl -fsS $curl_opts -X POST "$api/api/v1/auth/oidc-auth/login" \
    -H 'Content-Type: application/json' --data-binary @-)
token=$(printf '%s' "$login" | jq -er .accessToken)
# shellcheck disable=SC2086
listed=$(printf 'Authorization: Bearer %s\n' "$token" |
  curl -fsS $curl_opts -H @- \
    "$api/api/v4/secrets?projectId=$INFISICAL_PROJECT_ID&environment=$INFISICAL_ENVIRONMENT&secretPath=/&expandSecretReferences=true&includeImports=false&recursive=false&viewSecretValue=true")
exports=$(printf '%s' "$listed" | jq -er '.secrets[] | "export \(.secretKey)=\(.secretValue | @sh)"')
eval "$exports"
exec "$@"

#!/usr/bin/env python3
"""The Python wrapper users write on the official SDK (infisicalsdk): log in
with OIDC Auth using the JWT from a file, list the secrets, exec the program
with them in its environment. A point of comparison for bench/run.sh.

usage: SVID_EXEC_JWT_FILE=... INFISICAL_API_URL=... INFISICAL_MACHINE_IDENTITY_ID=...
       INFISICAL_PROJECT_ID=... INFISICAL_ENVIRONMENT=... [SVID_EXEC_CA_CERT=...]
       sdk_wrapper.py PROGRAM [ARGS...]
"""
import os
import sys

from infisical_sdk import InfisicalSDKClient


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: sdk_wrapper.py PROGRAM [ARGS...]")
    # The SDK has no CA option; requests (under it) trusts REQUESTS_CA_BUNDLE,
    # which wins over the session's own setting, so point that at the CA.
    ca_cert = os.environ.get("SVID_EXEC_CA_CERT")
    if ca_cert:
        os.environ["REQUESTS_CA_BUNDLE"] = ca_cert
    with open(os.environ["SVID_EXEC_JWT_FILE"], encoding="utf-8") as f:
        jwt = f.read().strip()
    client = InfisicalSDKClient(host=os.environ["INFISICAL_API_URL"], cache_ttl=None)
    client.auth.oidc_auth.login(identity_id=os.environ["INFISICAL_MACHINE_IDENTITY_ID"], jwt=jwt)
    listed = client.secrets.list_secrets(
        project_id=os.environ["INFISICAL_PROJECT_ID"],
        environment_slug=os.environ["INFISICAL_ENVIRONMENT"],
        secret_path="/",
        expand_secret_references=True,
        include_imports=False,
    )
    env = dict(os.environ)
    for secret in listed.secrets:
        env[secret.secretKey] = secret.secretValue
    os.execvpe(sys.argv[1], sys.argv[1:], env)


if __name__ == "__main__":
    main()

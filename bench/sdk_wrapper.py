#!/usr/bin/env python3
"""The Python wrapper users write on the official SDK (infisicalsdk): log in
with OIDC Auth using the JWT from a file, list the secrets, exec the program
with them in its environment. A point of comparison for bench/run.sh."""
import os
import sys

from infisical_sdk import InfisicalSDKClient


def main() -> None:
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

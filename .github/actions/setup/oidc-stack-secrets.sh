#!/usr/bin/env bash
# Gives the stack this run's short-lived OIDC credentials as secret config, so that the program's
# providers never need a long-lived cloud key (docs/credentials.md, "Credentials and secrets"):
#   ecoma:aws_web_identity_token  a GitHub OIDC token with audience sts.amazonaws.com; the AWS
#                                 provider exchanges it for the pool's role_arn
#                                 (AssumeRoleWithWebIdentity, account pinned by the program).
#                                 It lives minutes: it serves what runs right after this step
#                                 (the preview); `ecoma-infra` sets a new one before each `up`
#                                 (docs/ci.md, "Fresh credentials for every update").
#   ecoma:gcp_credentials         the workload identity federation config that
#                                 google-github-actions/auth wrote (it holds no key)
# Each value reaches `pulumi config set --secret` on standard input: never on a command line or in
# the log. The stack's secrets provider encrypts it into this checkout's Pulumi.<stack>.yaml, which
# is never committed and dies with the runner.
#
# Environment: STACK (staging|prod), PULUMI_STACK_REF (org/stack), GCP_CREDENTIALS_FILE (may be
# empty), and the runner's ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN (the job's `id-token: write`).
set -euo pipefail

stack_file="Pulumi.${STACK:?}.yaml"
if [ ! -f "$stack_file" ]; then
  echo "::error::$stack_file not found (run from the repository root)" >&2
  exit 1
fi

# What the stack's burst pools need: an AWS pool that assumes a role, a GCP pool.
needs="$(python3 - "$stack_file" <<'PY'
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as handle:
    config = (yaml.safe_load(handle) or {}).get("config") or {}
burst = config.get("ecoma:burst") or {}
if (burst.get("aws") or {}).get("role_arn"):
    print("aws")
if burst.get("gcp"):
    print("gcp")
PY
)"

set_secret() {  # KEY; the value comes on standard input
  pulumi config set --secret --stack "${PULUMI_STACK_REF:?}" "$1"
}

if grep -qx aws <<<"$needs"; then
  if [ -z "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ] || [ -z "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ]; then
    echo "::error::no OIDC token available: the job needs 'permissions: id-token: write'" >&2
    exit 1
  fi
  # The request token goes in a header read from a file descriptor, not in curl's argv.
  response="$(curl --fail --silent --show-error --retry 3 \
    --header @<(printf 'Authorization: bearer %s\n' "$ACTIONS_ID_TOKEN_REQUEST_TOKEN") \
    "${ACTIONS_ID_TOKEN_REQUEST_URL}&audience=sts.amazonaws.com")"
  token="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["value"])' <<<"$response")"
  echo "::add-mask::${token}"
  printf '%s' "$token" | set_secret ecoma:aws_web_identity_token
  echo "ecoma:aws_web_identity_token: set for this run (OIDC, audience sts.amazonaws.com)"
fi

if grep -qx gcp <<<"$needs"; then
  if [ -n "${GCP_CREDENTIALS_FILE:-}" ]; then
    set_secret ecoma:gcp_credentials <"$GCP_CREDENTIALS_FILE"
    echo "ecoma:gcp_credentials: set for this run (workload identity federation)"
  else
    echo "ecoma:gcp_credentials: no workload identity configured, the stack's own value is used"
  fi
fi

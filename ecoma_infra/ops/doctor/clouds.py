"""The cloud checks of `doctor`, for each burst pool the stack defines.

No cloud SDK is installed (boto3, google-auth and oci are not dependencies; oci alone is ~550 MB),
and this tool does not hand-sign cloud API requests. So `doctor` checks here what it can without
asking the cloud: that the credential is in the environment, well formed, not expired and made
for this stack's pool (the OCI key against its fingerprint, the GCP project, the OIDC token's
expiry and audience). Whether the cloud accepts it, and whether the image and the instance type
exist in the region, is reported as "not checked (no SDK)", with the command that does check it:
`pulumi preview` resolves the image and validates the instance type with the stack's own
credentials.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ecoma_infra.ops.doctor.report import Check, fail, not_checked, ok, warn
from ecoma_infra.stack.model import NAMESPACE, AwsPool, GcpPool, OciPool, StackConfig

AWS_ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
AWS_SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 (a variable name)
AWS_TOKEN_FILE_ENV = "AWS_WEB_IDENTITY_TOKEN_FILE"  # noqa: S105 (the AWS SDKs' name for it)
GCP_CREDENTIALS_ENV = "GOOGLE_CREDENTIALS"  # the Google provider's variable: the JSON itself
OCI_PRIVATE_KEY_ENV = "OCI_PRIVATE_KEY"  # the PEM itself, as ecoma:oci_private_key holds it
STS_AUDIENCE = "sts.amazonaws.com"
FORM = "credential form"


def cloud_checks(
    config: StackConfig,
    environ: Mapping[str, str],
    *,
    stack: str,
    clock: Callable[[], float] = time.time,
) -> list[Check]:
    checks: list[Check] = []
    burst = config.burst
    if burst.aws is not None:
        checks += _live_not_checked(
            "aws",
            _aws_credential(burst.aws, environ, clock),
            stack,
            [
                (
                    "image",
                    f"AMI '{burst.aws.image.name}' of {burst.aws.image.owner} in "
                    f"{burst.aws.region}",
                ),
                ("instance type", f"{burst.aws.instance_type} in {burst.aws.zone}"),
            ],
        )
    if burst.gcp is not None:
        checks += _live_not_checked(
            "gcp",
            _gcp_credential(burst.gcp, environ),
            stack,
            [
                ("image", f"{burst.gcp.image}"),
                ("instance type", f"{burst.gcp.instance_type} in {burst.gcp.zone}"),
            ],
        )
    if burst.oci is not None:
        checks += _live_not_checked(
            "oci",
            _oci_credential(burst.oci, environ),
            stack,
            [
                ("image", f"{burst.oci.image} in {burst.oci.region}"),
                ("instance type", f"shape {burst.oci.instance_type} in {burst.oci.zone}"),
            ],
        )
    return checks


def _live_not_checked(
    area: str, credential: Check, stack: str, things: list[tuple[str, str]]
) -> list[Check]:
    """The credential's local check, then what only the cloud's API could confirm."""
    why = (
        f"no {area.upper()} SDK here, and `doctor` does not sign {area.upper()} API requests itself"
    )
    fix = f"`pulumi preview --stack {stack}` with the stack's credentials checks it"
    return [
        credential,
        not_checked(area, "credential accepted", why, fix),
        *(not_checked(area, name, f"{what}: {why}", fix) for name, what in things),
    ]


# --------------------------------------------------------------------------- AWS


def _aws_credential(pool: AwsPool, environ: Mapping[str, str], clock: Callable[[], float]) -> Check:
    if pool.role_arn:
        return _aws_oidc(pool.role_arn, environ, clock)
    key_id = environ.get(AWS_ACCESS_KEY_ENV, "")
    secret = environ.get(AWS_SECRET_KEY_ENV, "")
    if not key_id or not secret:
        pairs = ((AWS_ACCESS_KEY_ENV, key_id), (AWS_SECRET_KEY_ENV, secret))
        missing = [variable for variable, value in pairs if not value]
        return not_checked(
            "aws",
            FORM,
            f"{' and '.join(missing)} not set",
            f"export them (the stack's {NAMESPACE}:aws_access_key_id and "
            f"{NAMESPACE}:aws_secret_access_key)",
        )
    if not (len(key_id) == 20 and key_id[:4] in ("AKIA", "ASIA") and key_id.isalnum()):
        return fail(
            "aws",
            FORM,
            f"{AWS_ACCESS_KEY_ENV} is not an access key id (AKIA... or ASIA..., 20 characters)",
            "export the access key id, not the secret or an ARN",
        )
    return ok("aws", FORM, f"access key {key_id[:4]}...{key_id[-4:]} and its secret are set")


def _aws_oidc(role_arn: str, environ: Mapping[str, str], clock: Callable[[], float]) -> Check:
    path = environ.get(AWS_TOKEN_FILE_ENV)
    if not path:
        return not_checked(
            "aws",
            FORM,
            f"the pool assumes {role_arn} with an OIDC token and {AWS_TOKEN_FILE_ENV} is not set "
            "(CI mints the token minutes before `up`)",
            f"in CI, write the job's OIDC token (audience {STS_AUDIENCE}) to a file and export "
            f"{AWS_TOKEN_FILE_ENV}",
        )
    try:
        claims = _jwt_claims(Path(path).read_text().strip())
    except OSError as error:
        return fail(
            "aws",
            FORM,
            f"{AWS_TOKEN_FILE_ENV}: cannot read {path}: {error.strerror}",
            f"point {AWS_TOKEN_FILE_ENV} at the file holding the OIDC token",
        )
    if claims is None:
        return fail(
            "aws",
            FORM,
            f"{AWS_TOKEN_FILE_ENV}: the file does not hold a JWT",
            "write the OIDC token itself (three base64url parts) to the file",
        )
    problems = []
    expires = claims.get("exp")
    if isinstance(expires, int | float) and expires <= clock():
        problems.append(f"it expired {int(clock() - expires)} s ago")
    audiences = claims.get("aud")
    audiences = audiences if isinstance(audiences, list) else [audiences]
    if STS_AUDIENCE not in audiences:
        problems.append(f"its audience is {', '.join(map(str, audiences))}, not {STS_AUDIENCE}")
    if problems:
        return fail(
            "aws",
            FORM,
            f"the OIDC token in {path}: {'; '.join(problems)}",
            f"request a fresh token with audience {STS_AUDIENCE} right before the check",
        )
    return ok(
        "aws",
        FORM,
        f"an unexpired OIDC token for {STS_AUDIENCE} (subject {claims.get('sub', '?')}) to "
        f"assume {role_arn}",
    )


def _jwt_claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


# --------------------------------------------------------------------------- GCP


def _gcp_credential(pool: GcpPool, environ: Mapping[str, str]) -> Check:
    text = environ.get(GCP_CREDENTIALS_ENV)
    if not text:
        return not_checked(
            "gcp",
            FORM,
            f"{GCP_CREDENTIALS_ENV} is not set",
            f"export {GCP_CREDENTIALS_ENV} with the JSON of the stack's "
            f"{NAMESPACE}:gcp_credentials",
        )
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return fail(
            "gcp",
            FORM,
            f"{GCP_CREDENTIALS_ENV} is not JSON (line {error.lineno}; the value is not shown)",
            "export the service account key or workload identity config as JSON",
        )
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == "service_account":
        return _gcp_service_account(pool, document)
    if kind == "external_account":
        audience = document.get("audience", "?")
        return ok("gcp", FORM, f"a workload identity federation config (audience {audience})")
    return fail(
        "gcp",
        FORM,
        f"{GCP_CREDENTIALS_ENV} is JSON of type {kind!r}, not a service account key or a "
        "workload identity federation config",
        "export the service account key (type service_account) or the federation config",
    )


def _gcp_service_account(pool: GcpPool, document: Mapping[str, Any]) -> Check:
    missing = [
        key for key in ("client_email", "private_key", "project_id") if not document.get(key)
    ]
    if missing:
        return fail(
            "gcp",
            FORM,
            f"the service account key lacks {', '.join(missing)}",
            "download a new JSON key of the service account",
        )
    if document["project_id"] != pool.project:
        return warn(
            "gcp",
            FORM,
            f"the key is of project {document['project_id']}, the pool's is {pool.project}",
            f"use a service account of {pool.project} (or, if this one is granted roles there "
            "on purpose, ignore this)",
        )
    return ok("gcp", FORM, f"service account {document['client_email']} of {pool.project}")


# --------------------------------------------------------------------------- OCI


def _oci_credential(pool: OciPool, environ: Mapping[str, str]) -> Check:
    name = FORM
    pem = environ.get(OCI_PRIVATE_KEY_ENV)
    if not pem:
        return not_checked(
            "oci",
            name,
            f"{OCI_PRIVATE_KEY_ENV} is not set",
            f"export {OCI_PRIVATE_KEY_ENV} with the PEM of the stack's {NAMESPACE}:oci_private_key",
        )
    fingerprint = oci_fingerprint(pem)
    if fingerprint is None:
        return fail(
            "oci",
            name,
            f"{OCI_PRIVATE_KEY_ENV} is not an unencrypted PEM private key (the value is not shown)",
            "export the API signing key in PEM form, without a passphrase",
        )
    if fingerprint != pool.fingerprint:
        return fail(
            "oci",
            name,
            f"the key's fingerprint is {fingerprint}, the pool says "
            f"{pool.fingerprint}: OCI would refuse every signed request",
            f"set {NAMESPACE}:burst.oci.fingerprint: {fingerprint} if this key is the uploaded "
            "one, or export the key that matches",
        )
    return ok("oci", name, f"the key matches {NAMESPACE}:burst.oci.fingerprint {fingerprint}")


def oci_fingerprint(pem: str) -> str | None:
    """OCI's key fingerprint: the MD5 of the public key in DER form, as colon-separated hex
    (`openssl rsa -pubout -outform DER -in key.pem | openssl md5 -c`, OCI docs, "Required Keys
    and OCIDs")."""
    # cryptography comes with ansible-core, a dependency of the project.
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return None
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.md5(der, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))

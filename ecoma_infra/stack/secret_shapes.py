"""What a secret looks like, so that one placed in a plain field is refused, never echoed.

Secrets of this project are separate `secure:` config keys (model.SECRET_KEYS). A value that has
the shape of one of them anywhere else (a k3s token in `k3s.server_args`, an API token under a
provider's namespace) would reach the stack outputs, the inventory that ansible-runner writes to
disk, or a log. `secret_kind` names what a value looks like without repeating it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

# (what it is, its shape). Each shape is specific enough not to match ordinary config values.
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # k3s's secure token: K10<sha256 of the CA>::<user>:<password>
    ("a k3s token", re.compile(r"K10[0-9a-fA-F]{16,}::\S+")),
    ("a Tailscale key", re.compile(r"\btskey-[A-Za-z0-9_-]{8,}")),
    # Proxmox API token: USER@REALM!TOKENID=UUID
    (
        "a Proxmox API token",
        re.compile(
            r"[^\s@!=]+@[^\s@!=]+![A-Za-z][A-Za-z0-9._-]*=[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-"
            r"[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
        ),
    ),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")),
    ("a GCP service account key", re.compile(r'"private_key(_id)?"\s*:')),
    ("a password in a URL", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)),
)

# k3s flags whose value is a secret (k3s server/agent --help): the token flags and the etcd
# snapshot S3 credentials. `--token-file` and friends take a path and are fine.
SECRET_K3S_FLAGS: tuple[str, ...] = (
    "--token",
    "-t",
    "--agent-token",
    "--etcd-s3-access-key",
    "--etcd-s3-secret-key",
    "--etcd-s3-session-token",
)

# Key names that hold a credential in a provider's namespace: the ones the providers' own schemas
# mark secret (pulumi_<provider>/provider.py wraps them in `pulumi.Output.secret`; a test checks
# this table against the installed SDKs), plus `gcp:credentials` (a service account key file's
# content, which the gcp schema leaves unmarked).
PROVIDER_SECRET_KEYS: dict[str, frozenset[str]] = {
    "proxmoxve": frozenset({"apiToken", "authTicket", "csrfPreventionToken", "password"}),
    "aws": frozenset({"accessKey", "secretKey", "token"}),
    "gcp": frozenset({"accessToken", "credentials"}),
    "oci": frozenset({"privateKey", "privateKeyPassword", "tokenExchangeClientSecret"}),
    "tailscale": frozenset({"apiKey", "identityToken", "oauthClientSecret"}),
}
# Names that hold a credential wherever they appear inside a structured value (proxmoxve:ssh has
# `password`, `privateKey`); compared without case, `_` and `-`.
_SECRET_FIELD_NAMES = frozenset(
    {"password", "passphrase", "privatekey", "secret", "secretkey", "accesskey", "token",
     "apitoken", "apikey", "clientsecret", "oauthclientsecret"}
)  # fmt: skip


def secret_kind(value: str) -> str | None:
    """What `value` looks like (`a k3s token`, ...), or None when it looks like no secret."""
    for kind, shape in _SHAPES:
        if shape.search(value):
            return kind
    return None


def mask_secrets(text: str) -> str:
    """`text` with everything shaped like a secret replaced by `[secret]`."""
    for _, shape in _SHAPES:
        text = shape.sub("[secret]", text)
    return text


def secret_key_name(namespace: str, key: str) -> bool:
    """Whether `namespace:key` names a credential (its value must be `secure:`)."""
    return key in PROVIDER_SECRET_KEYS.get(namespace, frozenset()) or secret_field_name(key)


def secret_field_name(name: str) -> bool:
    """Whether a field called `name` holds a credential (`password`, `privateKey`, ...)."""
    return name.replace("_", "").replace("-", "").lower() in _SECRET_FIELD_NAMES


def secret_flag(args: list[str]) -> Iterator[tuple[int, str]]:
    """(index, flag) of each k3s flag in `args` that would carry a secret."""
    for index, arg in enumerate(args):
        flag = arg.split("=", 1)[0].strip()
        if flag in SECRET_K3S_FLAGS:
            yield index, flag


def plain_secrets(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(where, kind) of every string under `value` that looks like a secret; a `{secure: ...}`
    leaf is an encrypted value and is skipped."""
    if isinstance(value, str):
        kind = secret_kind(value)
        if kind:
            yield where, kind
    elif isinstance(value, Mapping):
        if set(value) == {"secure"}:
            return
        for key, item in value.items():
            yield from plain_secrets(item, f"{where}.{key}")
        for key in value:
            if isinstance(key, str) and (kind := secret_kind(key)):
                yield f"{where} (a key)", kind
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from plain_secrets(item, f"{where}[{index}]")

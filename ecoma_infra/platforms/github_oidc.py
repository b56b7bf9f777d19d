"""A fresh GitHub Actions OIDC token, asked of the runner's token endpoint.

A job with `permissions: id-token: write` gets two variables from the runner:
`ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN` (a bearer token for that
URL, valid for the whole job). Each GET of the URL with `&audience=<aud>` returns a new signed
JWT, `{"value": "<jwt>"}`, that lives only minutes (its `exp` claim); this is the request that
`@actions/core`'s `getIDToken` and `.github/actions/setup/oidc-stack-secrets.sh` make. A token is
asked for right before the call that needs it, never kept for a later one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from ecoma_infra.errors import EcomaError

URL_VARIABLE = "ACTIONS_ID_TOKEN_REQUEST_URL"
TOKEN_VARIABLE = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"  # noqa: S105  (a variable's name)
AWS_AUDIENCE = "sts.amazonaws.com"  # what AWS STS expects of a GitHub token (its OIDC provider)
TIMEOUT = 30.0
# The runner's endpoint is https. Plain http is accepted only on the loopback interface, where a
# token never leaves the machine (the tests' simulated endpoint).
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_RETRY = "Fix: re-run the job; if it fails again, see https://www.githubstatus.com (Actions)"

Opener = Callable[..., Any]


class GitHubOidc:
    """The runner's OIDC token endpoint."""

    def __init__(
        self, url: str, request_token: str, *, opener: Opener = urllib.request.urlopen
    ) -> None:
        self._url = url
        self._request_token = request_token
        self._open = opener

    def __repr__(self) -> str:
        host = urllib.parse.urlsplit(self._url).hostname
        return f"GitHubOidc(host={host!r}, request_token=[secret])"

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str], *, opener: Opener = urllib.request.urlopen
    ) -> GitHubOidc | None:
        """The endpoint of this GitHub Actions job, or None outside one (or in a job without
        `id-token: write`, which gets neither variable)."""
        url, token = environ.get(URL_VARIABLE), environ.get(TOKEN_VARIABLE)
        if not url or not token:
            return None
        return cls(url, token, opener=opener)

    def token(self, audience: str) -> str:
        """A new OIDC token for `audience`; it is never logged nor part of an error message."""
        parts = urllib.parse.urlsplit(self._url)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
            raise EcomaError(
                f"{URL_VARIABLE} is not an https URL ({parts.scheme}://{parts.hostname}/...): "
                "it is set by the GitHub Actions runner; do not override it"
            )
        # The runner's URL already has a query (`?api-version=2.0`): keep it, set the audience.
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = [(k, v) for k, v in query if k != "audience"] + [("audience", audience)]
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        request = urllib.request.Request(  # noqa: S310  (https, or http on loopback: checked above)
            url, headers={"Authorization": f"bearer {self._request_token}"}
        )
        where = f"the runner's OIDC endpoint ({parts.hostname}, audience {audience})"
        try:
            with self._open(request, timeout=TIMEOUT) as response:
                value = json.load(response)["value"]
        except urllib.error.HTTPError as error:
            raise EcomaError(f"no OIDC token from {where}: HTTP {error.code}. {_RETRY}") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise EcomaError(
                f"no OIDC token from {where}: {type(error).__name__}. {_RETRY}"
            ) from None
        if not isinstance(value, str) or not value:
            raise EcomaError(f"{where} answered without a token. {_RETRY}")
        return value

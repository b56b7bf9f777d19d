"""What the HTTP adapters share: a `requests` session whose urllib3 `Retry` repeats a call that
hit a rate limit or a passing server error (429, 500, 502, 503, 504) or a refused connection,
waiting what the server's `Retry-After` asks (capped) or backing off, and a bounded read of the
answer. Used by the Tailscale and Prometheus clients.

A hostile or broken server can send an unreadable or endless `Retry-After`, a body of gigabytes
or no answer at all: each is bounded here (the wait, the size, the tries, the timeout), and none
ends in an exception other than `requests.RequestException` or `BodyTooLargeError`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, NewConnectionError
from urllib3.exceptions import TimeoutError as TimeoutErr
from urllib3.util.retry import Retry

RETRY_STATUSES = (429, 500, 502, 503, 504)
# An answer this large is no answer of these APIs (a device list of 1,000 machines is ~1 MB).
MAX_BODY_BYTES = 16 * 1024 * 1024


class BodyTooLargeError(Exception):
    """The answer's body went past `MAX_BODY_BYTES`."""


class _Retry(Retry):
    """`Retry` whose `Retry-After` waits are capped at `retry_after_cap` seconds, and whose
    parsing cannot raise: an unreadable value (urllib3 raises `InvalidHeader`; an integer of
    thousands of digits, `ValueError`) counts as none given, so the usual backoff applies."""

    def __init__(self, *args: Any, retry_after_cap: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_cap = retry_after_cap

    def new(self, **kw: Any) -> Self:
        retry = super().new(**kw)  # urllib3 makes a fresh Retry after every attempt
        retry.retry_after_cap = self.retry_after_cap
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            seconds = super().parse_retry_after(retry_after)
        except (InvalidHeader, ValueError, OverflowError):
            return 0.0
        return min(seconds, self.retry_after_cap)


def retrying_session(
    *,
    methods: Collection[str] = ("GET",),
    retries: int = 3,
    backoff: float = 0.5,
    retry_after_max: int = 30,
) -> requests.Session:
    """A session that retries `methods` on `RETRY_STATUSES` and on failed connections,
    honouring `Retry-After` (at most `retry_after_max` seconds each time). After the last try
    the last answer is returned as it is (`raise_on_status=False`) for the caller to explain."""
    retry = _Retry(
        total=retries,
        connect=2,
        read=1,
        status=retries,
        other=0,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset(method.upper() for method in methods),
        respect_retry_after_header=True,
        retry_after_cap=retry_after_max,
        raise_on_status=False,
    )
    session = requests.Session()
    session.max_redirects = 5
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def read_body(response: requests.Response, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body of a response requested with `stream=True`, at most `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(f"the answer is larger than {limit // (1024 * 1024)} MiB")
            chunks.append(chunk)
    finally:
        response.close()
    return b"".join(chunks)


def failure_reason(error: requests.RequestException, timeout: float) -> str:
    """Why a request got no answer, in a few words: `Connection refused`, `timed out (timeout
    0.3 s)`, a TLS or proxy problem. urllib3's `MaxRetryError` keeps the last cause in
    `reason`; its text carries the host and port, never a header."""
    inner = error.args[0] if error.args else error
    reason = getattr(inner, "reason", None) or inner
    # After the last retry of a read timeout, requests raises ConnectionError(MaxRetryError),
    # not Timeout: the cause tells.
    # (urllib3's NewConnectionError, a refused connection, is a subclass of its timeout error.)
    timed_out = isinstance(reason, TimeoutError | TimeoutErr) and not isinstance(
        reason, NewConnectionError
    )
    if isinstance(error, requests.Timeout) or timed_out:
        return f"timed out (timeout {timeout:g} s)"
    text = str(reason)
    marker = "Failed to establish a new connection: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text.rstrip(")\"'") if len(text) <= 300 else text[:297] + "..."

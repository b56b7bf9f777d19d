"""Read the autoscale signals from Prometheus's HTTP API (`/api/v1/query`) over `requests`; a
query that meets an overloaded server (503, 429) or a refused connection is repeated as
`Retry-After` asks (`platforms.http`).

Each signal is one instant query that must come back as a single number: a scalar, or a vector
with exactly one sample. No sample means no reading (None), and so does NaN; anything else is an
`EcomaError` that says how to fix the query or the URL.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from typing import Any

import requests

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.http import (
    BodyTooLargeError,
    failure_reason,
    read_body,
    retrying_session,
)
from ecoma_infra.stack.model import AutoscaleSettings

_URL_FIX = (
    "Fix: check the --prometheus URL (scheme, host, port and any path prefix, "
    "e.g. http://prometheus.monitoring:9090) and that Prometheus is up"
)
_SHOWN_SERIES = 3


class PrometheusClient:
    """Instant queries against one Prometheus server; `base_url` may carry a path prefix."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, retry_after_max: int = 30) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise EcomaError(
                f"{base_url!r} is not an http(s) URL of Prometheus. "
                "Fix: give e.g. --prometheus http://prometheus.monitoring:9090"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # What messages show: a password in the URL's user part is masked.
        self.shown_url = (
            self.base_url.replace(f":{parts.password}@", ":[secret]@", 1)
            if parts.password
            else self.base_url
        )
        self._session = retrying_session(methods=("GET",), retry_after_max=retry_after_max)

    def value(self, query: str) -> float | None:
        """The one number `query` evaluates to now; None when it matches no series or is NaN."""
        data = self._get("/api/v1/query", {"query": query}, query)
        kind = data.get("resultType")
        result = data.get("result")
        if kind == "scalar":
            return _number(result, query)
        if kind == "vector" and isinstance(result, list):
            if not result:
                return None
            if len(result) > 1:
                series = ", ".join(_series(sample) for sample in result[:_SHOWN_SERIES])
                more = (
                    f" and {len(result) - _SHOWN_SERIES} more"
                    if len(result) > _SHOWN_SERIES
                    else ""
                )
                raise EcomaError(
                    f"Prometheus query {query!r} returned {len(result)} series ({series}{more}), "
                    "not one number. Fix: aggregate it to one series with sum(...) or avg(...)"
                )
            sample = result[0]
            return _number(sample.get("value") if isinstance(sample, dict) else None, query)
        raise EcomaError(
            f"Prometheus query {query!r} returned a {kind}, not one number. Fix: make it an "
            "instant query that returns one sample, e.g. sum(rate(metric[5m])) instead of "
            "metric[5m]"
        )

    def read(self, settings: AutoscaleSettings) -> dict[str, float | None]:
        """The reading of every autoscale signal (cpu, queue, latency)."""
        return {name: self.value(rule.query) for name, rule in settings.rules().items()}

    def _get(self, path: str, params: dict[str, str], query: str) -> dict[str, Any]:
        """The `data` of a successful API answer; an EcomaError for any failure."""
        url = f"{self.base_url}{path}"
        try:
            response = self._session.get(
                url,
                params=params,
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                stream=True,
            )
            body = read_body(response)
        except requests.RequestException as error:
            raise EcomaError(
                f"cannot reach Prometheus at {self.shown_url}: "
                f"{failure_reason(error, self.timeout)}. {_URL_FIX}"
            ) from None
        except BodyTooLargeError as error:
            raise EcomaError(f"{self.shown_url}{path}: {error}. {_URL_FIX}") from None
        # Prometheus answers a bad query with 400/422/503 and an error document.
        status: int | None = response.status_code if response.status_code >= 400 else None
        document = _json(body)
        if document is None or document.get("status") not in ("success", "error"):
            got = f"HTTP {status}" if status is not None else "an answer"
            raise EcomaError(
                f"{self.shown_url}{path} gave {got} that is not Prometheus API JSON. {_URL_FIX}"
            )
        if document["status"] == "error":
            raise EcomaError(
                f"Prometheus rejected the query {query!r}: "
                f"{_short(document.get('errorType', 'error'))}: "
                f"{_short(document.get('error', '(no message)'))}"
            )
        data = document.get("data")
        if not isinstance(data, dict):
            raise EcomaError(f"{self.shown_url}{path} answered without data. {_URL_FIX}")
        return data


def _short(value: object, limit: int = 300) -> str:
    """What a server said, on one line and cut short (a hostile one may send a page)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _number(pair: object, query: str) -> float | None:
    """The value of a `[timestamp, "value"]` pair; None for NaN."""
    try:
        value = float(pair[1]) if isinstance(pair, list) and len(pair) == 2 else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise EcomaError(
            f"Prometheus query {query!r} returned a sample without a float value (a native "
            "histogram?). Fix: make the query return a plain number, e.g. histogram_quantile()"
        )
    return None if math.isnan(value) else value


def _series(sample: object) -> str:
    labels = sample.get("metric", {}) if isinstance(sample, dict) else {}
    name = labels.get("__name__", "")
    pairs = ", ".join(f'{key}="{value}"' for key, value in labels.items() if key != "__name__")
    return f"{name}{{{pairs}}}"

"""Read the autoscale signals from Prometheus's HTTP API (`/api/v1/query`), with urllib only.

Each signal is one instant query that must come back as a single number: a scalar, or a vector
with exactly one sample. No sample means no reading (None), and so does NaN; anything else is an
`EcomaError` that says how to fix the query or the URL.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ecoma_infra.errors import EcomaError
from ecoma_infra.stack.model import AutoscaleSettings

_URL_FIX = (
    "Fix: check the --prometheus URL (scheme, host, port and any path prefix, "
    "e.g. http://prometheus.monitoring:9090) and that Prometheus is up"
)
_SHOWN_SERIES = 3


class PrometheusClient:
    """Instant queries against one Prometheus server; `base_url` may carry a path prefix."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise EcomaError(
                f"{base_url!r} is not an http(s) URL of Prometheus. "
                "Fix: give e.g. --prometheus http://prometheus.monitoring:9090"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

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
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        # The scheme is http(s): __init__ checked it.
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
        status: int | None = None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as error:
            # Prometheus answers a bad query with 400/422/503 and an error document.
            status, body = error.code, error.read()
            error.close()
        except urllib.error.URLError as error:
            raise EcomaError(
                f"cannot reach Prometheus at {self.base_url}: {error.reason}. {_URL_FIX}"
            ) from None
        except (TimeoutError, OSError, http.client.HTTPException) as error:
            what = "timed out" if isinstance(error, TimeoutError) else repr(error)
            raise EcomaError(
                f"cannot reach Prometheus at {self.base_url}: {what} "
                f"(timeout {self.timeout:g} s). {_URL_FIX}"
            ) from None
        document = _json(body)
        if document is None or document.get("status") not in ("success", "error"):
            got = f"HTTP {status}" if status is not None else "an answer"
            raise EcomaError(
                f"{self.base_url}{path} gave {got} that is not Prometheus API JSON. {_URL_FIX}"
            )
        if document["status"] == "error":
            raise EcomaError(
                f"Prometheus rejected the query {query!r}: "
                f"{document.get('errorType', 'error')}: {document.get('error', '(no message)')}"
            )
        data = document.get("data")
        if not isinstance(data, dict):
            raise EcomaError(f"{self.base_url}{path} answered without data. {_URL_FIX}")
        return data


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
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

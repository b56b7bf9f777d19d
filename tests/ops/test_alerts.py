"""The burst alerting rules (monitoring/alerts.yaml) and their promtool unit tests.

promtool checks the rules and runs monitoring/alerts_test.yaml; the static tests hold the rules to
the metrics contract, to their runbooks in docs/runbooks.md, and to a firing and a quiet case per
alert.
promtool comes from Debian's `prometheus` package: missing, these tests skip, or fail when
ECOMA_LAB_REQUIRED=1 (CI).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from tools import required_tool

from ecoma_infra.ops import telemetry

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "alerts.yaml"
RULE_TESTS = MONITORING / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_PREFIX = "https://github.com/ecoma/ecoma-infra/blob/main/docs/runbooks.md#"

# The metrics contract the commands write (name -> labels): the alerts may use nothing else.
CONTRACT: dict[str, frozenset[str]] = dict(telemetry.LABELS)
CONTRACT_METRICS = frozenset(CONTRACT)
CONTRACT_LABELS = frozenset().union(*CONTRACT.values())
LABEL_VALUES = {
    "operation": frozenset(telemetry.OPERATIONS),
    "phase": frozenset(telemetry.PHASES),
    "provider": frozenset({"aws", "gcp", "oci"}),
}
SEVERITIES = frozenset({"warning", "critical"})
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")


# ------------------------------------------------------------------ helpers


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in load_yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule
    ]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in alert_rules()}


def rule_cases() -> Iterator[dict[str, Any]]:
    for group in load_yaml(RULE_TESTS)["tests"]:
        yield from group.get("alert_rule_test") or []


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def markdown_anchors(markdown: str) -> set[str]:
    """The anchors of every heading outside code fences; repeats get -1, -2... like GitHub."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or not match:
            continue
        anchor = github_anchor(match.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


_PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, enough for rule files)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"#.*", "", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b(?:offset|@)\s*-?[\w.]+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if word.lower() not in _PROMQL_WORDS:
            names.add(word)
    return names


def promql_selectors(expr: str) -> Iterator[tuple[str, str, str, str]]:
    """(metric, label, operator, value) of every label matcher on a named metric."""
    for selector in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", expr):
        for matcher in re.finditer(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector.group(2)):
            yield selector.group(1), matcher.group(1), matcher.group(2), matcher.group(3)


def promql_grouping_labels(expr: str) -> set[str]:
    labels = set()
    for clause in re.finditer(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        labels |= {label.strip() for label in clause.group(1).split(",") if label.strip()}
    return labels


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = required_tool(
        "promtool",
        "apt-get install prometheus (Debian ships it in that package)",
        "the alert rule tests",
    )
    return subprocess.run(
        [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


# ------------------------------------------------------------------ promtool


def test_promtool_check_rules() -> None:
    assert_ok(run_promtool("check", "rules", str(RULES.relative_to(ROOT))))


def test_promtool_unit_tests() -> None:
    assert_ok(run_promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT))))


# ------------------------------------------------------------------ static checks


def test_the_group_holds_the_expected_alerts() -> None:
    groups = load_yaml(RULES)["groups"]
    assert [group["name"] for group in groups] == ["ecoma-burst"]
    assert alert_names() == {
        "EcomaBurstTeardownFailed",
        "EcomaBurstTeardownStuck",
        "EcomaBurstNodeExpired",
        "EcomaBurstPoolAtMaxUnderLoad",
        "EcomaBurstCostAboveBudget",
        "EcomaBurstNodeNeverReady",
        "EcomaBurstDrillStale",
        "EcomaCredentialExpiringSoon",
        "EcomaK3sCertificateExpiring",
        "EcomaBurstOperationFailed",
        "EcomaAutoscaleStale",
    }


def test_every_alert_has_severity_and_annotations() -> None:
    problems = []
    for rule in alert_rules():
        name = rule["alert"]
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity {severity!r}, want one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations") or {}
        problems += [
            f"{name}: no {key} annotation"
            for key in REQUIRED_ANNOTATIONS
            if not str(annotations.get(key, "")).strip()
        ]
        if "$labels" not in annotations.get("description", "") and "$value" not in (
            annotations.get("description", "")
        ):
            problems.append(f"{name}: the description names neither $labels nor $value")
        url = annotations.get("runbook_url", "")
        if not url.startswith(RUNBOOK_PREFIX) or not url[len(RUNBOOK_PREFIX) :]:
            problems.append(f"{name}: runbook_url {url!r} is not {RUNBOOK_PREFIX}<anchor>")
    assert not problems, "\n".join(problems)


def test_runbook_anchors_are_headings_of_the_runbooks() -> None:
    anchors = markdown_anchors(RUNBOOKS.read_text(encoding="utf-8"))
    missing = sorted(
        {rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_PREFIX) for rule in alert_rules()}
        - anchors
    )
    assert not missing, (
        "docs/runbooks.md lacks the runbook headings of these runbook_url anchors: "
        f"{', '.join('#' + anchor for anchor in missing)} "
        "(one heading per alert, named exactly as the alert, e.g. '### EcomaBurstNodeExpired')"
    )


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in rule_cases():
        (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = alert_names()
    assert not (firing | quiet) - names, f"tests of unknown alerts: {(firing | quiet) - names}"
    assert not names - firing, f"alerts never tested firing: {sorted(names - firing)}"
    assert not names - quiet, f"alerts never tested quiet: {sorted(names - quiet)}"


def test_firing_cases_check_severity_and_every_annotation() -> None:
    problems = []
    for case in rule_cases():
        for alert in case.get("exp_alerts") or []:
            where = f"{case['alertname']} at {case['eval_time']}"
            if (alert.get("exp_labels") or {}).get("severity") not in SEVERITIES:
                problems.append(f"{where}: exp_labels without a severity")
            annotations = alert.get("exp_annotations") or {}
            problems += [
                f"{where}: exp_annotations without {key}"
                for key in REQUIRED_ANNOTATIONS
                if key not in annotations
            ]
    assert not problems, "\n".join(problems)


def test_rules_use_only_contract_metrics_and_labels() -> None:
    problems = []
    for rule in alert_rules():
        name, expr = rule["alert"], rule["expr"]
        metrics = promql_metric_names(expr)
        if not metrics:
            problems.append(f"{name}: no metric found in {expr!r}")
        problems += [
            f"{name}: {metric} is not in the contract" for metric in metrics - CONTRACT_METRICS
        ]
        for metric, label, op, value in promql_selectors(expr):
            if label not in CONTRACT.get(metric, frozenset()):
                problems.append(f"{name}: {metric} has no label {label}")
            known = LABEL_VALUES.get(label)
            if known and op in {"=", "!=", "=~", "!~"} and re.fullmatch(r"[\w|]+", value):
                problems += [
                    f"{name}: {label}={part!r} is not one of {sorted(known)}"
                    for part in value.split("|")
                    if part not in known
                ]
        problems += [
            f"{name}: groups by {label}, not a contract label"
            for label in promql_grouping_labels(expr) - CONTRACT_LABELS
        ]
        # Annotation templates may query too: every ecoma_ name in the rule.
        problems += [
            f"{name}: names {word}, not in the contract"
            for word in set(re.findall(r"\becoma_\w+", yaml.safe_dump(rule))) - CONTRACT_METRICS
        ]
    assert not problems, "\n".join(problems)


def test_unit_test_inputs_use_only_contract_metrics() -> None:
    series = [
        item["series"]
        for group in load_yaml(RULE_TESTS)["tests"]
        for item in group.get("input_series") or []
    ]
    unknown = {s for s in series if s.split("{", 1)[0].strip() not in CONTRACT_METRICS}
    assert not unknown, f"input series outside the contract: {sorted(unknown)}"


# ------------------------------------------------------------------ the helpers themselves


def test_promql_metric_names() -> None:
    expr = (
        'max by (stack, provider) (rate(foo_total{phase=~"a|b"}[5m] offset 1h)) > on (stack) '
        "bar - time() < 14 * 86400 and ignoring (x) baz_seconds{} or vector(1e3) unless qux:rec"
    )
    assert promql_metric_names(expr) == {"foo_total", "bar", "baz_seconds", "qux:rec"}
    assert promql_grouping_labels(expr) == {"stack", "provider", "x"}
    assert list(promql_selectors(expr)) == [("foo_total", "phase", "=~", "a|b")]


def test_github_anchor() -> None:
    assert github_anchor("EcomaBurstNodeExpired") == "ecomaburstnodeexpired"
    assert github_anchor("Alerts: cloud bursting (runbook)") == "alerts-cloud-bursting-runbook"
    assert markdown_anchors("# A\n```\n# not a heading\n```\n## A\n### B `c`\n") == {
        "a",
        "a-1",
        "b-c",
    }

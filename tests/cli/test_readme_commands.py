"""The commands README.md and docs/ name exist: `--help` of every command the README's table
names, every command the CLI has is in that table, and every `ecoma-infra ...` line of the
documentation parses with the real CLI (placeholders such as S, P and N filled in)."""

from __future__ import annotations

import re
import shlex

import pytest
from stacks import ROOT

from ecoma_infra.cli import main as cli

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
# What the documentation writes for "a stack", "a provider", "a number" ...
PLACEHOLDERS = {
    "S": "staging",
    "NAME": "staging",
    "P": "aws",
    "N": "2",
    "N-1": "1",
    "T": "4h",
    "PATH": "Pulumi.staging.yaml",
    "FILE": "inventory.json",
    "URL": "http://prometheus:9090",
    "DIR": "policy",
    "$ECOMA_PROMETHEUS_URL": "http://prometheus:9090",
}


def command_table() -> list[list[str]]:
    """The command words of each entry of the README's command table (`lab up|down` gives
    `lab up` and `lab down`)."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Commands$(?P<body>.*?)^## ", text, re.M | re.S)
    assert section, "README.md has no Commands section"
    found: list[list[str]] = []
    for line in section.group("body").splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split(" | ")[0]
        for span in re.findall(r"`([^`]+)`", first_cell):
            words = []
            for word in span.replace("\\|", "|").split():
                if word.startswith("-") or word.isupper():
                    break
                words.append(word)
            if not words:
                continue
            *group, last = words
            for choice in last.split("|"):
                found.append([*group, choice])
    return found


def leaf_commands() -> set[str]:
    return {" ".join(leaf.prog.split()[1:]) for leaf in cli.leaf_parsers(cli.build_parser())}


@pytest.mark.parametrize("words", command_table(), ids=" ".join)
def test_every_command_the_readme_names_has_help(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*words, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: ecoma-infra {' '.join(words)}")


def test_the_readme_names_every_command() -> None:
    named = {" ".join(words) for words in command_table()}
    assert leaf_commands() <= named, f"not in README.md: {sorted(leaf_commands() - named)}"


def documented_command_lines() -> list[tuple[str, str]]:
    found: dict[tuple[str, str], None] = {}
    for path in DOCS:
        for span in re.findall(r"`(ecoma-infra [^`]+)`", path.read_text(encoding="utf-8")):
            found[(path.relative_to(ROOT).as_posix(), " ".join(span.split()))] = None
    return list(found)


@pytest.mark.parametrize(("document", "line"), documented_command_lines(), ids=lambda v: v)
def test_every_documented_command_line_parses(
    document: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    words = [PLACEHOLDERS.get(word.strip("[]"), word.strip("[]")) for word in shlex.split(line)[1:]]
    if not any(word.startswith("-") for word in words):
        # A command named in passing (`ecoma-infra credentials check`): it exists.
        words = [*words, "--help"]
    parser = cli.build_parser()
    try:
        parsed = parser.parse_args(words)
    except SystemExit as exited:
        if exited.code == 0 and words[-1] == "--help":
            return
        pytest.fail(f"{document}: `{line}` does not parse:\n{capsys.readouterr().err}")
    assert parsed.command == words[0]


def test_the_documentation_has_command_lines_to_check() -> None:
    assert len(documented_command_lines()) >= 30

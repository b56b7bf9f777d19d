"""Reading terraform.tfvars with python-hcl2: values, the line of every key, and what is refused
(syntax errors, expressions, keys defined twice) with the file, the key and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from migrate_support import FIXTURES

from ecoma_infra.errors import UsageError
from ecoma_infra.migrate.tfvars import TfvarsError, read_tfvars, render_path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "terraform.tfvars"
    path.write_text(text)
    return path


def test_values_come_back_as_literals_with_the_line_of_every_key():
    tfvars = read_tfvars(FIXTURES / "prod.tfvars")
    sts = tfvars.values["nodes"]["sts-1"]
    assert sts["vm_id"] == 5301
    assert sts["disks"][2] == {
        "tier": "cold",
        "size": 2000,
        "datastore": "hdd-zfs",
        "filesystem": "xfs",
    }
    assert tfvars.values["burst"]["aws"]["hourly_price_usd"] == 0.23
    lines = (FIXTURES / "prod.tfvars").read_text().splitlines()
    line = tfvars.lines[("nodes", "sts-1", "disks", 2, "tier")]
    assert 'tier = "cold"' in lines[line - 1]
    assert lines[tfvars.lines[("nodes", "sts-1")] - 1].strip().startswith('"sts-1" = {')
    assert tfvars.problems == []


def test_a_missing_brace_is_a_syntax_error_naming_the_file_not_a_traceback():
    with pytest.raises(TfvarsError) as caught:
        read_tfvars(FIXTURES / "bad-syntax.tfvars")
    message = str(caught.value)
    assert str(FIXTURES / "bad-syntax.tfvars") in message
    assert "HCL syntax error: the file ends inside a block" in message
    assert "Fix:" in message


def test_an_unexpected_token_is_reported_at_its_line_and_column(tmp_path: Path):
    path = write(tmp_path, "a = 1\nb = = 2\nc = 3\n")
    with pytest.raises(
        TfvarsError, match=r"terraform\.tfvars:2: \(file\): HCL syntax error at column"
    ):
        read_tfvars(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("memory = 4 * 2048\n", "memory"),
        ('name = "pve-${var.site}"\n', "name"),
        ("node = var.node\n", "node"),
        ('nodes = { "a" = { ip = upper("x") } }\n', 'nodes["a"].ip'),
    ],
)
def test_an_expression_is_refused_at_its_key_and_left_out(tmp_path: Path, text: str, key: str):
    tfvars = read_tfvars(write(tmp_path, text))
    assert [render_path(p.path) for p in tfvars.problems] == [key]
    assert tfvars.problems[0].line == 1
    assert "an expression, not a literal value" in tfvars.problems[0].message
    assert "${" not in repr(tfvars.values)


def test_escaped_interpolation_is_a_literal_dollar_brace(tmp_path: Path):
    tfvars = read_tfvars(write(tmp_path, 'template = "$${name}"\n'))
    assert tfvars.problems == []
    assert tfvars.values["template"] == "${name}"


def test_a_key_defined_twice_is_a_problem_with_both_lines(tmp_path: Path):
    text = 'nodes = {\n  "cpl-1" = { vm_id = 1 }\n  "cpl-1" = { vm_id = 2 }\n}\n'
    tfvars = read_tfvars(write(tmp_path, text))
    [problem] = tfvars.problems
    assert render_path(problem.path) == 'nodes["cpl-1"]'
    assert problem.message.startswith("defined twice (lines 2 and 3)")


def test_hcl_the_parser_cannot_read_is_a_clear_error(tmp_path: Path):
    # python-hcl2 8.1 fails on a `for` expression with a TypeError of its own.
    path = write(tmp_path, "a = {\n for k in x: k => 1}\n")
    with pytest.raises(TfvarsError, match=r"the HCL parser cannot read this file"):
        read_tfvars(path)


def test_a_missing_file_is_bad_usage(tmp_path: Path):
    with pytest.raises(UsageError, match=r"no such file"):
        read_tfvars(tmp_path / "absent.tfvars")

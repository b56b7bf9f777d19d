"""Read a `terraform.tfvars` file: HCL through python-hcl2, literals only, every key's line.

python-hcl2 gives the values but no positions (and keeps the last of two equal keys without a
word), so the same text is also walked as the parser's tree: that gives the line of every key
path and finds keys defined twice. An expression (`4 * 2048`, `var.x`, `"pve-${x}"`) comes back
from the parser as a string holding `${...}`: it is refused, since the migration reads values,
not Terraform's evaluation of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ecoma_infra.errors import EcomaError, UsageError

Key = str | int
KeyPath = tuple[Key, ...]

_OPTIONS = hcl2.SerializationOptions(
    strip_string_quotes=True,
    with_comments=False,
    explicit_blocks=False,
    preserve_heredocs=False,
    preserve_scientific_notation=False,
)
# What python-hcl2 turns an expression or an interpolation into; `$${` is HCL's escaped `${`.
_EXPRESSION = re.compile(r"(?<!\$)\$\{|(?<!%)%\{")


def render_path(path: KeyPath) -> str:
    """`("nodes", "sts-1", "disks", 2, "tier")` -> `nodes["sts-1"].disks[2].tier`."""
    text = ""
    for key in path:
        if isinstance(key, int):
            text += f"[{key}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and text != "nodes":
            text += f".{key}" if text else key
        else:
            text += f'["{key}"]'
    return text


@dataclass(frozen=True)
class TfvarsProblem:
    path: KeyPath
    line: int | None
    message: str
    fix: str
    stack_where: str = ""  # the draft's key, for a finding of the stack rules

    def render(self, source: str) -> str:
        at = f"{source}:{self.line}" if self.line else source
        key = render_path(self.path)
        if self.stack_where:
            key = (
                f"{key} ({self.stack_where})" if key else f"{self.stack_where} (not in the tfvars)"
            )
        return f"{at}: {key or '(file)'}: {self.message}. Fix: {self.fix}"


class TfvarsError(EcomaError):
    """The tfvars file cannot be migrated as it is; every problem is listed."""

    def __init__(self, source: str, problems: list[TfvarsProblem]) -> None:
        self.source = source
        self.problems = problems
        count = len(problems)
        header = f"{source}: {count} problem{'s' if count != 1 else ''}; no stack file written"
        super().__init__("\n".join([header, *(f"  - {p.render(source)}" for p in problems)]))


@dataclass
class Tfvars:
    """The values of a tfvars file, the line of every key path in it, and what is wrong in it
    (expressions, keys defined twice); expressions are left out of `values`."""

    source: str
    values: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[TfvarsProblem] = field(default_factory=list)

    def line(self, path: KeyPath) -> int | None:
        """The line of `path`, else of its nearest ancestor that has one."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    def problem(self, path: KeyPath, message: str, fix: str) -> TfvarsProblem:
        return TfvarsProblem(path, self.line(path), message, fix)


def read_tfvars(path: Path) -> Tfvars:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{source}: no such file. Fix: give the Terraform codebase's terraform.tfvars"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{source}: cannot read it: {error}") from None
    try:
        tree = hcl2.parses_to_tree(text)
        values = hcl2.loads(text, serialization_options=_OPTIONS)
    except UnexpectedInput as error:
        raise TfvarsError(source, [_syntax_problem(error, text)]) from None
    except Exception as error:  # python-hcl2 fails on some HCL (`for` expressions) with TypeErrors
        raise TfvarsError(
            source,
            [
                TfvarsProblem(
                    (),
                    None,
                    f"the HCL parser cannot read this file ({type(error).__name__}: {error})",
                    "keep the file to plain `name = value` assignments of literals",
                )
            ],
        ) from None
    tfvars = Tfvars(source, {}, {})
    tfvars.problems = list(_walk_lines(tree, (), tfvars.lines))
    if not isinstance(values, dict):
        problem = TfvarsProblem((), None, "not a set of assignments", "use name = value")
        raise TfvarsError(source, [problem])
    tfvars.values = _literals(tfvars, values, ())
    return tfvars


def _syntax_problem(error: UnexpectedInput, text: str) -> TfvarsProblem:
    last_line = text.count("\n") + 1
    line = getattr(error, "line", None)
    column = getattr(error, "column", None)
    if isinstance(error, UnexpectedEOF) or (isinstance(line, int) and line >= last_line):
        # python-hcl2 reports a missing `}` or `]` where the input ends (one line past the
        # last: it appends a newline), not where it is missing.
        return TfvarsProblem(
            (),
            None,
            "HCL syntax error: the file ends inside a block or a string",
            'a `{`, `[` or `"` is not closed: check that every block is closed',
        )
    found = ""
    if isinstance(error, UnexpectedToken):
        found = f"unexpected {error.token!r}"
    elif isinstance(error, UnexpectedCharacters) and isinstance(line, int) and line > 0 and column:
        found = f"unexpected character {text.splitlines()[line - 1][column - 1 : column]!r}"
    return TfvarsProblem(
        (),
        line if isinstance(line, int) and line > 0 else None,
        f"HCL syntax error at column {column}: {found or 'unexpected input'}",
        "fix the syntax (terraform fmt shows where)",
    )


# --------------------------------------------------------------------------- positions


def _walk_lines(node: Any, path: KeyPath, lines: dict[KeyPath, int]) -> Iterator[TfvarsProblem]:
    """Record the line of every key path under `node`; yield keys that are defined twice."""
    if not isinstance(node, Tree):
        return
    kind = node.data
    if kind in ("attribute", "object_elem"):
        key = _key(node.children[0])
        value = _value_children(node)[-1] if _value_children(node) else None
        if key is not None:
            here = (*path, key)
            line = node.meta.line
            if here in lines:
                yield TfvarsProblem(
                    here,
                    line,
                    f"defined twice (lines {lines[here]} and {line}); HCL would keep the last "
                    "one without a word",
                    "keep one of them",
                )
                return  # its keys would all be reported twice again
            lines[here] = line
            yield from _walk_lines(value, here, lines)
        return
    if kind == "tuple":
        for index, child in enumerate(_value_children(node)):
            lines.setdefault((*path, index), child.meta.line)
            yield from _walk_lines(child, (*path, index), lines)
        return
    for child in node.children:
        yield from _walk_lines(child, path, lines)


def _value_children(node: Tree) -> list[Tree]:
    return [
        child
        for child in node.children
        if isinstance(child, Tree)
        and child.data not in ("new_line_or_comment", "object_elem_key", "identifier")
    ]


def _key(node: Any) -> str | None:
    """The text of an attribute's name or an object key (identifier or quoted string)."""
    tokens = [t for t in _tokens(node) if t.type in ("NAME", "STRING_CHARS")]
    if not tokens:
        return None
    return "".join(str(t) for t in tokens)


def _tokens(node: Any) -> Iterator[Token]:
    if isinstance(node, Token):
        yield node
    elif isinstance(node, Tree):
        for child in node.children:
            yield from _tokens(child)


# --------------------------------------------------------------------------- literals


def _literals(tfvars: Tfvars, value: Any, path: KeyPath) -> Any:
    """`value` without its expressions (each one noted as a problem), escapes resolved."""
    if isinstance(value, dict):
        kept = {k: _literals(tfvars, v, (*path, k)) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not _LEFT_OUT}
    if isinstance(value, list):
        kept_items = [_literals(tfvars, v, (*path, i)) for i, v in enumerate(value)]
        return [None if v is _LEFT_OUT else v for v in kept_items]
    if isinstance(value, str):
        if _EXPRESSION.search(value):
            tfvars.problems.append(
                tfvars.problem(
                    path,
                    "an expression, not a literal value (the migration reads values, it does not "
                    "evaluate Terraform)",
                    "write the value itself, e.g. 8192 instead of 4 * 2048",
                )
            )
            return _LEFT_OUT
        return value.replace("$${", "${").replace("%%{", "%{")
    return value


_LEFT_OUT = object()

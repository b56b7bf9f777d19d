"""Read a stack file's text into a YAML document, strictly and within bounded memory and time.

PyYAML's `safe_load` alone accepts what a stack file must not hold, and a few inputs end in a
traceback instead of a message:

- a duplicate key silently replaces the first one (`ecoma:nodes` twice: four nodes become one),
  so the loader here refuses any key given twice in one mapping (YAML 1.2 requires unique keys;
  merge keys `<<` stay allowed, their values are meant to be overridden);
- an alias bomb (`&a [*a, *a, ...]` nested a few levels) costs nothing to parse, since aliases
  are shared references, but everything that later walks the document (pydantic, json.dumps,
  deepcopy) expands it: the composed node graph is measured before it is built, and a document
  that expands to more than `MAX_VALUES` values, or an alias inside itself, is refused;
- bytes that are not UTF-8, integers longer than Python converts, impossible dates and nesting
  deeper than the parser's recursion end in exceptions other than `yaml.YAMLError`; each becomes
  a `ConfigError` naming the file.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from ecoma_infra.errors import UsageError
from ecoma_infra.stack.issues import ConfigError, ConfigIssue

# A stack file is a few kilobytes (prod: ~9 KB); a megabyte is a mistake, not a config.
MAX_FILE_BYTES = 1 << 20
# Values after every alias is expanded (prod: ~1,300). Anything near this is an alias bomb.
MAX_VALUES = 50_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SHOWN_KEY = 60


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


# libyaml's C parser when PyYAML has it: the same documents, nodes and marks as the pure-Python
# one in a fifth of the time (a 1000-node stack file: 1.1 s -> 0.2 s); the constructor, and so
# the duplicate-key check below, is the same Python code on both.
if TYPE_CHECKING:  # one of the two, to the type checker (their interfaces are the same)
    _BaseLoader = yaml.SafeLoader
else:
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UniqueKeys(yaml.constructor.SafeConstructor):
    """A safe constructor that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # SafeConstructor reports an unhashable key itself
            if key in seen:
                shown = str(key) if len(str(key)) <= _SHOWN_KEY else str(key)[:_SHOWN_KEY] + "..."
                raise _DuplicateKeyError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key `{shown}` is given twice in one mapping (the second would "
                    "silently replace the first)",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class StrictLoader(UniqueKeys, _BaseLoader):
    """The safe loader of `parse_yaml`: libyaml's parser when there is one, unique keys."""


def read_text(path: Path, source: str) -> str:
    """The file's text: at most `MAX_FILE_BYTES`, UTF-8."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no such stack file. Fix: give an existing file, or create it "
            f"with `pulumi stack init` and copy Pulumi.staging.yaml as a start"
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a stack file") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read the stack file: {error.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(
            source,
            [
                ConfigIssue(
                    "file",
                    f"larger than {MAX_FILE_BYTES // 1024} KiB; a stack file is a few kilobytes",
                    "give the stack's Pulumi.<stack>.yaml, not another file",
                )
            ],
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(
            source,
            [
                ConfigIssue(
                    f"line {line}",
                    f"not UTF-8 text (byte {error.start} cannot be decoded)",
                    "save the file as UTF-8 (Pulumi reads stack files as UTF-8)",
                )
            ],
        ) from None


def parse_yaml(text: str, source: str) -> Any:
    """The YAML document in `text`: keys unique, expansion bounded, errors as `ConfigError`."""
    counts_characters = issubclass(StrictLoader, yaml.reader.Reader)  # libyaml's counts bytes
    try:
        loader = StrictLoader(text)  # its reader refuses control characters at once
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expansion(node, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as error:
        # The C reader counts in bytes of the UTF-8 text, the Python one in characters.
        before = (
            text[: error.position]
            if counts_characters
            else text.encode("utf-8")[: error.position].decode("utf-8", "replace")
        )
        line = before.count("\n") + 1
        raise ConfigError(
            source,
            [
                ConfigIssue(
                    f"YAML (line {line})",
                    f"the character U+{error.character:04X} is not allowed in YAML",
                    "remove it (a stray control character or a binary paste)",
                )
            ],
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        if "maximum nesting depth" in str(problem):  # libyaml's own limit (1000 levels)
            raise ConfigError(
                source,
                [ConfigIssue(f"YAML{at}", "nested too deeply to read", "flatten the document")],
            ) from None
        fix = (
            "remove or rename one of the two (see `ecoma-infra schema` for the keys)"
            if isinstance(error, _DuplicateKeyError)
            else "fix the YAML syntax"
        )
        raise ConfigError(source, [ConfigIssue(f"YAML{at}", str(problem), fix)]) from None
    except RecursionError:
        raise ConfigError(
            source,
            [ConfigIssue("YAML", "nested too deeply to read", "flatten the document")],
        ) from None
    except (ValueError, OverflowError) as error:
        # Integers longer than Python converts (4300 digits), dates like 2025-13-45.
        raise ConfigError(
            source,
            [
                ConfigIssue(
                    "YAML",
                    f"a value YAML cannot turn into data: {str(error).split(';')[0]}",
                    "fix the value (quote it to keep it a string)",
                )
            ],
        ) from None


def _check_expansion(root: Node, source: str) -> None:
    """Count the values `root` expands to (aliases counted each time they are used), without
    expanding it: a node's size is computed once and reused wherever an alias points to it."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(
                source,
                [
                    ConfigIssue(
                        f"YAML (line {node.start_mark.line + 1})",
                        "an alias refers to a node that contains it (an endless structure)",
                        "replace the alias by the values it should hold",
                    )
                ],
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [item for pair in node.value for item in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_VALUES:
                raise ConfigError(
                    source,
                    [
                        ConfigIssue(
                            f"YAML (line {node.start_mark.line + 1})",
                            f"the document expands to more than {MAX_VALUES} values through "
                            "its aliases (an alias bomb?)",
                            "write the values out instead of repeating aliases",
                        )
                    ],
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def read_stack_document(path: Path, source: str) -> Any:
    """`read_text` then `parse_yaml`."""
    return parse_yaml(read_text(path, source), source)

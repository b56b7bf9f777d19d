"""An inventory file that is not what `configure` reads ends in a usage error naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecoma_infra.configure.inputs import load_inventory_file
from ecoma_infra.errors import UsageError


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"all": {"vars": {"x": "\xff\xfe"}}}', "not UTF-8 text (byte 24"),
        (b"[" * 100_000, "nested too deeply"),
        (b"{", "not valid JSON"),
    ],
    ids=["not-utf8", "nested-too-deeply", "truncated"],
)
def test_a_hostile_inventory_file_is_a_usage_error_naming_it(
    tmp_path: Path, content: bytes, words: str
) -> None:
    path = tmp_path / "inventory.json"
    path.write_bytes(content)
    with pytest.raises(UsageError) as caught:
        load_inventory_file(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert words in str(caught.value)

"""A text stream that says it is a terminal, for the tests of what a person at a shell sees
(a module of its own: a test imports it by name, which a `conftest` of one folder cannot be)."""

from __future__ import annotations

import io


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal (what a person at a shell has)."""

    def isatty(self) -> bool:
        return True

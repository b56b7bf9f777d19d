"""Load the provider SDKs' module packages one member at a time.

A generated provider package such as `pulumi_gcp.compute` re-exports every module it holds from
its `__init__.py` (`from .autoscaler import *`, ... 290 of them): touching one class imports
them all (~1 s of a preview for GCP alone). The program uses a handful per provider.

`install()` puts a finder on `sys.meta_path` for the `pulumi_<provider>.<module>` packages. Such
a package runs its `__init__.py` without the `from .x import *` lines (and without
`from . import outputs`), and finds a missing attribute by the `__all__` of the module that
exports it (or as a module of the package), imported on first use. Every name resolves to the
object the eager `__init__.py` would have bound (the later `import *` wins, as there). An
`__init__.py` of another shape, or a member without a literal `__all__`, loads as usual.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

# The packages of the provider SDKs the program uses; their top-level modules are already lazy.
PROVIDERS = ("pulumi_aws", "pulumi_gcp", "pulumi_oci", "pulumi_proxmoxve", "pulumi_tailscale")

_STAR = re.compile(r"from \.(\w+) import \*")
_SUBMODULE = re.compile(r"from \. import (\w+)")
_ALL = re.compile(r"^__all__ = \[(.*?)\]", re.MULTILINE | re.DOTALL)
_NAME = re.compile(r"'(\w+)'")
# `__all__` sits right after a generated module's imports (an `_inputs.py` lists up to ~5,000
# names): read on until it closes, and no further.
_HEAD_BYTES = 1 << 16


def _exported_names(path: Path) -> list[str] | None:
    with path.open(encoding="utf-8") as source:
        text = source.read(_HEAD_BYTES)
        if "\n__all__ = [" not in text:
            return None
        while (found := _ALL.search(text)) is None:
            more = source.read(_HEAD_BYTES)
            if not more:
                return None
            text += more
    return _NAME.findall(found.group(1))


class _LeanPackage(ModuleType):
    """A provider package whose members are imported when one of their names is asked for."""

    _lean_index: dict[str, str]  # exported name -> the member module that exports it
    _lean_submodules: frozenset[str]

    def __getattr__(self, name: str) -> Any:
        index, package = self._lean_index, self.__name__
        if name in index:
            return getattr(importlib.import_module(f"{package}.{index[name]}"), name)
        if name in self._lean_submodules or self._has_member(name):
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing a member binds it on its package; `from .x import *` in the eager package
        # then binds x's exports, so that a name exported by x (a function `get_x` in module
        # `get_x`) wins over the module. Bind them here the same way, whoever imported x.
        if isinstance(value, ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            super().__setattr__(name, value)
            exports = [n for n, member in self._lean_index.items() if member == name]
            for export in exports:
                super().__setattr__(export, getattr(value, export))
            return
        super().__setattr__(name, value)

    def _has_member(self, name: str) -> bool:
        directory = Path(str(self.__file__)).parent
        return (directory / f"{name}.py").is_file() or (directory / name / "__init__.py").is_file()


class _LeanPackageLoader(importlib.machinery.SourceFileLoader):
    def exec_module(self, module: ModuleType) -> None:
        directory = Path(self.path).parent
        kept: list[str] = []
        index: dict[str, str] = {}
        submodules: set[str] = set()
        for line in Path(self.path).read_text(encoding="utf-8").splitlines():
            star, submodule = _STAR.fullmatch(line), _SUBMODULE.fullmatch(line)
            if star:
                names = _exported_names(directory / f"{star.group(1)}.py")
                if names is None:  # not a generated member: load the package as it is
                    super().exec_module(module)
                    return
                index.update(dict.fromkeys(names, star.group(1)))
            elif submodule:
                submodules.add(submodule.group(1))
            else:
                kept.append(line)
        module.__dict__["_lean_index"] = index
        module.__dict__["_lean_submodules"] = frozenset(submodules)
        module.__dict__["__all__"] = [*index, *sorted(submodules)]
        module.__class__ = _LeanPackage
        code = compile("\n".join(kept) + "\n", self.path, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - the package's own __init__.py, less its imports


class _LeanPackageFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in PROVIDERS or "." not in fullname:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if (
            spec is None
            or not spec.submodule_search_locations
            or type(spec.loader) is not importlib.machinery.SourceFileLoader
        ):
            return spec
        spec.loader = _LeanPackageLoader(spec.loader.name, spec.loader.path)
        return spec


_FINDER = _LeanPackageFinder()


def install() -> None:
    """Load provider packages imported from now on member by member (idempotent)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)

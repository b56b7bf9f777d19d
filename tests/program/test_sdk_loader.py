"""`sdk_loader`: a provider package loaded member by member gives the same objects as the
package's own eager `__init__.py`, and loads only what is asked for. Each check runs in a fresh
interpreter, since an import cannot be undone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_NAMES = """
import importlib, json, sys
if sys.argv[2] == "lean":
    from ecoma_infra.program import sdk_loader
    sdk_loader.install()
package = importlib.import_module(sys.argv[1])
package._utilities  # a provider's subpackages load lazily: on first attribute access
names = json.loads(sys.argv[3]) if len(sys.argv) > 3 else [n for n in vars(package) if n[0] != "_"]
def identity(value):
    if isinstance(value, type(sys)):
        return "module " + value.__name__
    return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
print(json.dumps({n: identity(getattr(package, n)) for n in names}))
"""


def _python(code: str, *args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("package", ["pulumi_aws.ebs", "pulumi_proxmoxve.sdn"])
def test_every_name_resolves_to_what_the_eager_package_binds(package: str) -> None:
    eager = json.loads(_python(_NAMES, package, "eager"))
    assert len(eager) > 20
    lean = json.loads(_python(_NAMES, package, "lean", json.dumps(sorted(eager))))
    assert lean == eager


def test_a_member_is_loaded_only_when_used() -> None:
    code = textwrap.dedent("""
        import sys
        from ecoma_infra.program import sdk_loader
        sdk_loader.install()
        import pulumi_aws
        volume = pulumi_aws.ebs.Volume
        print(volume.__module__)
        print(sorted(m for m in sys.modules if m.startswith("pulumi_aws.ebs.")))
    """)
    module, loaded = _python(code).splitlines()
    assert module == "pulumi_aws.ebs.volume"
    assert "pulumi_aws.ebs.snapshot" not in loaded
    assert "pulumi_aws.ebs.volume" in loaded


def test_a_package_of_another_shape_loads_as_it_is(tmp_path: Path) -> None:
    package = tmp_path / "pulumi_ecomafake" / "core"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from .plain import *\nfrom .generated import *\n")
    # No literal __all__: `import *` exports every public name, which no index can know.
    (package / "plain.py").write_text("import os as _os\nPlain = 'plain'\n")
    (package / "generated.py").write_text("__all__ = ['Generated']\nGenerated = 'generated'\n")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from ecoma_infra.program import sdk_loader
        sdk_loader.PROVIDERS = (*sdk_loader.PROVIDERS, "pulumi_ecomafake")
        sdk_loader.install()
        import pulumi_ecomafake.core as core
        # Loaded eagerly: both members are there without being asked for.
        print(sorted(m for m in sys.modules if m.startswith("pulumi_ecomafake.core.")))
        print(core.Plain, core.Generated)
    """)
    loaded, values = _python(code).splitlines()
    assert "pulumi_ecomafake.core.plain" in loaded
    assert "pulumi_ecomafake.core.generated" in loaded
    assert values == "plain generated"


def test_an_unknown_name_is_an_attribute_error() -> None:
    code = textwrap.dedent("""
        from ecoma_infra.program import sdk_loader
        sdk_loader.install()
        import pulumi_aws
        try:
            pulumi_aws.ebs.NoSuchThing
        except AttributeError as error:
            print(error)
    """)
    assert "has no attribute 'NoSuchThing'" in _python(code)

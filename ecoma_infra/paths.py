"""Where the project's files are, wherever the command is run from."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root(start: Path | None = None) -> Path:
    """The directory holding `Pulumi.yaml`: searched upwards from `start` (default: the current
    directory), else the checkout this package was imported from."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").is_file() and (candidate / "ecoma_infra").is_dir():
            return candidate
    return PACKAGE_DIR.parent


def ansible_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "ansible"

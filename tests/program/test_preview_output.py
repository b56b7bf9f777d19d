"""What `ecoma-infra preview --offline` prints stays the same, byte for byte, while the way it is
computed gets faster (simulated: the real program under the real SDK with the mock engine).

The digests were taken from the preview as it printed before issue 20's changes (provider
packages loaded member by member, the collector paused, libyaml, inputs decoded once, the clone
lanes held by the node components), and taken again from `main` at 5f4043e (the stacks as
issues 13-19 left them) before those changes were merged onto it. They changed since on purpose
once: the user data snippets are retained on delete and every VM ignores changes to its user
data file id. A change to the program that is meant to
change the preview changes them too: print the new ones with
`.venv/bin/ecoma-infra preview --stack STACK --offline [--json] | sha256sum`
and say in the commit why the preview changed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecoma_infra import yaml_io
from ecoma_infra.cli.main import main
from ecoma_infra.program.cloudinit import render_user_data
from ecoma_infra.program.components.proxmox import ProxmoxNodeArgs
from ecoma_infra.stack.load import load_stack_file

ROOT = Path(__file__).resolve().parents[2]

DIGESTS = {
    ("prod", "json"): "6a18ea7c48eb66cb86e5786af2f838c9b4b1774a86614696b544533c247478b0",
    ("prod", "text"): "dc60558a4aa3124fdec30c4975c323818776bf7d2f02bcc7f93110aa38451357",
    ("staging", "json"): "5c69eee0c06802435f68361f1cedb73c9c8f0445593d2f932ba7130d646a24e9",
    ("staging", "text"): "9027d58c35e67921c9e3df36e859b046fa5be6038f60e99426812cc93971e8d6",
}


@pytest.mark.parametrize(("stack", "form"), sorted(DIGESTS))
def test_simulated_preview_prints_the_same_bytes_as_before(
    stack: str, form: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    argv = ["preview", "--stack", stack, "--offline", *(["--json"] if form == "json" else [])]
    assert main(argv) == 0
    printed = capsys.readouterr()
    digest = hashlib.sha256(printed.out.encode()).hexdigest()
    assert digest == DIGESTS[stack, form], f"the {form} preview of {stack} changed"
    # What `validate` says goes to stderr, never into the document.
    assert printed.err.startswith(f"Pulumi.{stack}.yaml: valid: ")


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_libyaml_writes_the_same_user_data_as_pure_python(stack: str) -> None:
    config = load_stack_file(ROOT / f"Pulumi.{stack}.yaml").config
    assert yaml_io.SafeDumper is getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    for node in config.nodes:
        boot = ProxmoxNodeArgs(
            stack=stack,
            node=node,
            settings=config.proxmox,
            network=config.network,
            ssh=config.ssh,
            storage=config.storage,
            tailscale=config.tailscale,
            vnet_id="vnet",
        ).boot()
        written = render_user_data(boot, "tskey-" + "auth-kOFFLINE-0123456789abcdef")
        document = yaml.safe_load(written.removeprefix("#cloud-config\n"))
        pure = "#cloud-config\n" + yaml.dump(
            document, Dumper=yaml.SafeDumper, sort_keys=False, width=200
        )
        assert written == pure, node.name


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_libyaml_reads_the_stack_files_as_pure_python(stack: str) -> None:
    text = (ROOT / f"Pulumi.{stack}.yaml").read_text()
    assert yaml_io.safe_load(text) == yaml.load(text, Loader=yaml.SafeLoader)


def test_a_yaml_error_still_names_the_line_with_libyaml(tmp_path: Path) -> None:
    broken = tmp_path / "Pulumi.broken.yaml"
    broken.write_text("config:\n  ecoma:network:\n    search_domain: [unclosed\n")
    with pytest.raises(yaml_io.YAMLError) as raised:
        yaml_io.safe_load(broken.read_text())
    mark = raised.value.problem_mark  # type: ignore[attr-defined]
    assert mark is not None
    assert mark.line >= 2


_ONLY_USED_MODULES = """
import sys
from pathlib import Path
from ecoma_infra.program.offline import run_offline
run_offline(Path("Pulumi.prod.yaml"))
loaded = sorted(m for m in sys.modules if m.startswith("pulumi_gcp.compute."))
print("\\n".join(loaded))
"""


def test_simulated_prod_preview_loads_only_the_provider_modules_it_uses() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _ONLY_USED_MODULES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    loaded = set(done.stdout.split())
    # The GCP pool's resources and their shared input and output types ...
    assert {"pulumi_gcp.compute.network", "pulumi_gcp.compute.firewall"} <= loaded
    assert "pulumi_gcp.compute._inputs" in loaded
    # ... and none of the other ~280 modules of the package.
    assert "pulumi_gcp.compute.autoscaler" not in loaded
    assert len(loaded) < 20, sorted(loaded)

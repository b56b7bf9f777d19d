"""`ecoma-infra diagram`: the topology from the stack file, and prod's copy in README.md kept in
step with Pulumi.prod.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from stacks import ROOT, stack_variant

from ecoma_infra.cli import main as cli
from ecoma_infra.stack.load import load_stack_file

README = ROOT / "README.md"
BLOCK = re.compile(
    r"<!-- diagram: prod \(`ecoma-infra diagram -s prod`\) -->\n```mermaid\n(.*?)```\n",
    re.DOTALL,
)


def diagram(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(["diagram", *argv]) == 0
    return capsys.readouterr().out


def test_the_readme_shows_prods_diagram_as_the_stack_file_makes_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    found = BLOCK.search(README.read_text(encoding="utf-8"))
    assert found, "README.md lacks the prod diagram block"
    assert found.group(1) == diagram(capsys, "-s", "prod"), (
        "README.md's diagram is stale: run `ecoma-infra diagram -s prod` and paste it"
    )


def test_every_vm_sits_on_its_hypervisor_with_role_and_ip(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = diagram(capsys, "--file", str(ROOT / "Pulumi.prod.yaml"))
    config = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    blocks = dict(re.findall(r'subgraph pve_(\w+)\["hypervisor \w+"\]\n(.*?)\n    end', text, re.S))
    assert set(blocks) == set(config.proxmox.hypervisors)
    for node in config.nodes:
        line = next(line for line in blocks[node.hypervisor].splitlines() if node.name in line)
        assert str(node.ip) in line
        assert line.endswith(f":::{node.role}")
    assert 'vip(["kube-vip 10.41.1.254<br/>k3s API of cpl-1, cpl-2, cpl-3"])' in text
    assert "VLAN 41 on vmbr0, 10.41.1.0/24, gateway 10.41.1.1" in text


def test_routers_and_pools_follow_the_stack_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def change(config: dict) -> None:
        config["ecoma:tailscale"]["subnet_routers"] = ["cpl-2"]
        config["ecoma:burst"]["gcp"].update(count=3, ttl="90m")

    path = stack_variant(tmp_path, "prod", change)
    text = diagram(capsys, "--file", str(path))

    assert [line.split()[0] for line in text.splitlines() if "routes 10.41.1.0/24" in line] == [
        "cpl_2"
    ]
    assert "burst pool gcp: 3 of max 10<br/>n2-standard-4 · TTL 90m · wkr-gcp-N" in text
    assert 'pool_gcp -- "joins, accepts routes" --> tailnet' in text
    assert "subnet router" not in next(line for line in text.splitlines() if "cpl_1[" in line)


def test_the_diagram_is_a_mermaid_flowchart_with_known_ids_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = diagram(capsys, "--file", str(ROOT / "Pulumi.staging.yaml"))
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    declared = set(re.findall(r"^\s*(\w+)[\[(]", text, re.M)) | {"tailnet", "vip"}
    for source, target in re.findall(r"^\s*(\w+) -[-.].*?-[->] ?(\w+)$", text, re.M):
        assert source in declared
        assert target in declared
    assert text.count("subgraph") == text.count("\n    end") + text.count("\n  end")
    document = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())
    assert len(document["config"]["ecoma:nodes"]) == len(
        re.findall(r":::(cpl|ops|sts|wkr)$", text, re.M)
    )

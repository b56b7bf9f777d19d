"""Static checks of the Ansible tree: lint, syntax, and the k3s config as the role renders it.

No host is touched: the renders run the k3s role's own `config.yml` entry point with a local
connection into a temporary directory, for the hosts of the sample inventory.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
SAMPLE_INVENTORY = ANSIBLE_DIR / "inventory" / "sample.yaml"
VENV_BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}: uv sync --group dev")
    return str(path)


def _ansible_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "ECOMA_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra)
    return env


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO, env=_ansible_env(**env), capture_output=True, text=True, check=False
    )


def _ansible_files() -> list[Path]:
    return [p for p in ANSIBLE_DIR.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------------------------
# Lint and syntax


def test_ansible_lint_production_profile_passes_offline() -> None:
    result = _run([_tool("ansible-lint"), "--offline", "--profile", "production", "ansible/"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output


def test_no_lint_rule_is_skipped_or_silenced() -> None:
    for config in (ANSIBLE_DIR / ".ansible-lint", REPO / ".ansible-lint"):
        if config.exists():
            settings = yaml.safe_load(config.read_text()) or {}
            assert not settings.get("skip_list"), f"{config} skips rules"
            assert not settings.get("warn_list"), f"{config} downgrades rules"
    silenced = [str(p) for p in _ansible_files() if "noqa" in p.read_text(errors="replace")]
    assert silenced == []


@pytest.mark.parametrize("playbook", ["playbook.yaml", "reset.yaml"])
def test_playbook_syntax_check(playbook: str) -> None:
    result = _run(
        [
            _tool("ansible-playbook"),
            "-i",
            str(SAMPLE_INVENTORY),
            "--syntax-check",
            str(ANSIBLE_DIR / playbook),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_force_appears_nowhere_in_the_ansible_tree() -> None:
    """A forced mkfs reformats disks holding data: the word must not exist in ansible/."""
    result = subprocess.run(
        ["grep", "-r", "-n", "-i", "force", str(ANSIBLE_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, f"'force' found:\n{result.stdout}"


def test_playbook_has_one_play_per_group_with_role_tags() -> None:
    plays = yaml.safe_load((ANSIBLE_DIR / "playbook.yaml").read_text())
    # First the check of what changed since the last converge, last the record of this one;
    # every play between leaves out the nodes that nothing changed on.
    check, record = plays[0], plays[-1]
    assert check["tasks"][0]["ansible.builtin.import_role"]["name"] == "converged"
    assert record["tasks"][0]["ansible.builtin.import_role"]["tasks_from"] == "record.yml"
    assert check["tasks"][0]["tags"] == record["tasks"][0]["tags"] == ["always"]
    plays = plays[1:-1]
    assert all(play["hosts"].endswith(":!ecoma_converged") for play in [*plays, record])
    by_hosts = {play["hosts"].removesuffix(":!ecoma_converged"): play for play in plays}
    servers = by_hosts["ecoma_cpl"]
    assert servers["serial"] == 1
    assert [r["role"] for r in servers["roles"]] == ["k3s_server"]
    agents = by_hosts["ecoma_ops:ecoma_sts:ecoma_wkr"]
    assert [r["role"] for r in agents["roles"]] == ["k3s_agent"]
    tags = {role["role"]: role["tags"] for play in plays for role in play.get("roles", [])}
    assert tags["storage"] == ["storage"]
    assert tags["tailscale"] == ["tailscale"]
    assert tags["k3s_server"] == tags["k3s_agent"] == ["k3s"]
    assert plays[-1]["tasks"][0]["ansible.builtin.import_role"]["tasks_from"] == "labels.yml"


def test_ssh_host_key_checking_is_not_disabled_globally() -> None:
    config = (ANSIBLE_DIR / "ansible.cfg").read_text()
    assert not re.search(r"^\s*host_key_checking\s*=\s*(false|0|no)", config, re.I | re.M)
    assert "StrictHostKeyChecking" not in config
    assert re.search(r"^pipelining\s*=\s*true", config, re.M)
    assert "ControlPersist" in config


def test_every_role_documents_and_types_its_public_variables() -> None:
    for role in sorted((ANSIBLE_DIR / "roles").iterdir()):
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        options = specs["argument_specs"]["main"]["options"]
        for name in defaults:
            assert name.startswith(f"{role.name}_"), f"{role.name}: {name} lacks the role prefix"
            assert name in options, f"{role.name}: {name} is not typed in argument_specs"
            assert "type" in options[name], f"{role.name}: {name} has no type"


# Modules that write a file, and the argument naming it.
_WRITES = {
    "ansible.builtin.template": "dest",
    "ansible.builtin.copy": "dest",
    "ansible.builtin.get_url": "dest",
    "ansible.builtin.lineinfile": "path",
    "ansible.posix.sysctl": "sysctl_file",
    "ansible.posix.mount": "fstab",
}


def _role_vars() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((ANSIBLE_DIR / "roles").glob("*/*/main.yml")):
        if path.parent.name in ("defaults", "vars"):
            for name, value in (yaml.safe_load(path.read_text()) or {}).items():
                if isinstance(value, str):
                    found[name] = value
    return found


def _resolve(text: str, names: dict[str, str]) -> str:
    for _ in range(5):
        text = re.sub(
            r"\{\{\s*(\w+)(?:\s*\|\s*default\('([^']*)'\))?\s*\}\}",
            lambda m: names.get(m[1], m[2] or m[0]),
            text,
        )
    return text


def _tasks(node: object) -> list[dict]:
    if isinstance(node, list):
        return [t for item in node for t in _tasks(item)]
    if isinstance(node, dict):
        return [node, *(t for key in ("block", "rescue", "always") for t in _tasks(node.get(key)))]
    return []


def test_every_file_a_role_writes_is_part_of_the_converged_state() -> None:
    """A re-run skips a node whose state digest is unchanged: a file that a role writes and the
    digest does not cover would let a node drift unseen."""
    names = _role_vars()
    converged = yaml.safe_load((ANSIBLE_DIR / "roles/converged/defaults/main.yml").read_text())
    covered = [_resolve(p, names) for p in converged["converged_paths"]]
    covered += [_resolve(p, names) for p in converged["converged_stat_paths"]]
    written = []
    for path in sorted((ANSIBLE_DIR / "roles").glob("*/tasks/*.yml")):
        if path.parts[-3] == "converged" or path.name == "reset.yml":
            continue
        for task in _tasks(yaml.safe_load(path.read_text())):
            for module, argument in _WRITES.items():
                if isinstance(task.get(module), dict) and argument in task[module]:
                    target = _resolve(str(task[module][argument]), names)
                    written.append((f"{path.parts[-3]}/{path.name}", target))
    assert len(written) > 10  # the roles' templates, copies, fstab, sysctl file, key ...
    for where, target in written:
        # A name computed in Jinja (`k3s` or `k3s-agent`) must match a covered path.
        pattern = ".+".join(re.escape(part) for part in re.split(r"\{\{.*?\}\}", target))
        assert any(
            re.fullmatch(pattern, c) or target.startswith(c.rstrip("/") + "/") for c in covered
        ), f"{where} writes {target}, which converged_paths does not cover"


# --------------------------------------------------------------------------------------------
# The k3s config as rendered by the role

RENDER_PLAYBOOK = """
- name: Render the k3s configuration of every sample host
  hosts: all
  gather_facts: false
  connection: local
  vars:
    ansible_python_interpreter: {python}
    k3s_config_dir: "{out}/{{{{ inventory_hostname }}}}"
    k3s_start_service: false
  tasks:
    - name: Render through the role's own entry point
      ansible.builtin.include_role:
        name: k3s
        tasks_from: config.yml
"""

# A cloud node's ansible_host is a MagicDNS name: its node IP comes from `tailscale ip -4`,
# which does not exist here, so the test gives it one.
WKR_NODE_IP = "100.64.0.21"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("k3s-render")
    out = work / "out"
    playbook = work / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK.format(python=sys.executable, out=out))
    extra_inventory = work / "extra.yaml"
    extra_inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "ecoma_wkr": {"hosts": {"wkr-aws-1": {"k3s_node_ip": WKR_NODE_IP}}}
                    }
                }
            }
        )
    )
    result = _run(
        [
            _tool("ansible-playbook"),
            "-i",
            str(SAMPLE_INVENTORY),
            "-i",
            str(extra_inventory),
            str(playbook),
        ],
        ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"),
        ECOMA_K3S_AGENT_TOKEN="K10agent-token-not-in-any-file::node:secret",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {host.name: host for host in out.iterdir()}


def _config(rendered: dict[str, Path], host: str) -> dict:
    return yaml.safe_load((rendered[host] / "config.yaml").read_text())


def test_config_file_is_root_only(rendered: dict[str, Path]) -> None:
    for host, directory in rendered.items():
        mode = stat.S_IMODE((directory / "config.yaml").stat().st_mode)
        assert mode == 0o600, f"{host}: config.yaml mode {oct(mode)}"


def test_first_server_initialises_the_cluster(rendered: dict[str, Path]) -> None:
    config = _config(rendered, "cpl-1")
    assert config["cluster-init"] is True
    assert "server" not in config
    assert config["node-name"] == "cpl-1"
    assert config["node-ip"] == "10.41.1.11"
    assert config["token-file"] == str(rendered["cpl-1"] / "token")
    assert "token" not in config
    assert config["agent-token-file"] == str(rendered["cpl-1"] / "agent-token")
    assert config["cluster-cidr"] == "10.42.0.0/16"
    assert config["service-cidr"] == "10.43.0.0/16"
    assert config["cluster-dns"] == "10.43.0.10"
    assert config["tls-san"] == ["10.41.1.254", "10.41.1.11"]
    assert config["flannel-backend"] == "vxlan"
    assert config["flannel-iface"] == "tailscale0"
    assert config["write-kubeconfig-mode"] == "0600"
    assert config["node-label"] == [
        "topology.ecoma.io/provider=proxmox",
        "node.ecoma.io/role=cpl",
    ]
    assert config["node-taint"] == ["node.ecoma.io/role=cpl:NoSchedule"]
    assert config["kubelet-arg"] == ["cluster-dns=169.254.20.10"]
    assert not (rendered["cpl-1"] / "kubelet.conf.d" / "50-ecoma-swap.conf").exists()


def test_joining_server_registers_through_the_vip(rendered: dict[str, Path]) -> None:
    config = _config(rendered, "cpl-2")
    assert "cluster-init" not in config
    assert config["server"] == "https://10.41.1.254:6443"
    assert config["node-name"] == "cpl-2"
    assert config["node-ip"] == "10.41.1.12"
    assert config["tls-san"] == ["10.41.1.254", "10.41.1.12"]
    assert config["cluster-cidr"] == "10.42.0.0/16"
    assert config["flannel-backend"] == "vxlan"
    assert config["node-taint"] == ["node.ecoma.io/role=cpl:NoSchedule"]


def test_agent_with_a_swap_tier_runs_the_kubelet_with_swap(rendered: dict[str, Path]) -> None:
    config = _config(rendered, "sts-1")
    assert config["server"] == "https://10.41.1.254:6443"
    assert config["node-name"] == "sts-1"
    assert config["node-ip"] == "10.41.1.31"
    assert config["token-file"] == str(rendered["sts-1"] / "token")
    for server_only in (
        "cluster-init",
        "cluster-cidr",
        "service-cidr",
        "tls-san",
        "flannel-backend",
    ):
        assert server_only not in config, server_only
    assert config["flannel-iface"] == "tailscale0"
    assert config["node-label"] == ["topology.ecoma.io/provider=proxmox", "node.ecoma.io/role=sts"]
    assert config["node-taint"] == ["node.ecoma.io/role=sts:NoSchedule"]
    assert config["kubelet-arg"] == [
        "cluster-dns=169.254.20.10",
        "fail-swap-on=false",
        "feature-gates=NodeSwap=true",
    ]
    dropin = yaml.safe_load(
        (rendered["sts-1"] / "kubelet.conf.d" / "50-ecoma-swap.conf").read_text()
    )
    assert dropin["kind"] == "KubeletConfiguration"
    assert dropin["failSwapOn"] is False
    assert dropin["memorySwap"] == {"swapBehavior": "LimitedSwap"}


def test_cloud_worker_uses_its_tailscale_ip(rendered: dict[str, Path]) -> None:
    config = _config(rendered, "wkr-aws-1")
    assert config["server"] == "https://10.41.1.254:6443"
    assert config["node-name"] == "wkr-aws-1"
    assert config["node-ip"] == WKR_NODE_IP
    assert config["flannel-iface"] == "tailscale0"
    assert config["node-label"] == ["topology.ecoma.io/provider=aws", "node.ecoma.io/role=wkr"]
    assert config["node-taint"] == []
    assert config["kubelet-arg"] == ["cluster-dns=169.254.20.10"]
    assert "cluster-init" not in config


def test_server_labels_are_not_set_by_the_kubelet(rendered: dict[str, Path]) -> None:
    for host in rendered:
        labels = _config(rendered, host)["node-label"]
        assert not [label for label in labels if "kubernetes.io/" in label], host

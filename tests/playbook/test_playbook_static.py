"""Static checks of the Ansible tree: lint, syntax, and the k3s config as the role renders it.

No host is touched: the renders run the k3s role's own `config.yml` entry point with a local
connection into a temporary directory, for the hosts of the sample inventory.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
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


@pytest.mark.parametrize(
    "playbook", ["playbook.yaml", "reset.yaml", "upgrade.yaml", "snapshot.yaml"]
)
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
    # No network here: the create-or-join decision trusts the inventory order (the lab tests
    # probe real hosts).
    k3s_join_probe: false
  tasks:
    - name: Render through the role's own entry point
      ansible.builtin.include_role:
        name: k3s
        tasks_from: config.yml
        public: true
    - name: Render the unit as the role does (its real path is /etc/systemd/system)
      ansible.builtin.template:
        src: {roles}/k3s/templates/k3s.service.j2
        dest: "{out}/{{{{ inventory_hostname }}}}/k3s.service"
        mode: "0644"
    - name: Read the k3s_server role's defaults
      ansible.builtin.include_vars:
        file: {roles}/k3s_server/defaults/main.yml
      when: inventory_hostname in groups['ecoma_cpl']
    - name: Render the NodeLocal DNS manifest as the k3s_server role does
      ansible.builtin.template:
        src: {roles}/k3s_server/templates/nodelocaldns.yaml.j2
        dest: "{out}/{{{{ inventory_hostname }}}}/nodelocaldns.yaml"
        mode: "0600"
      when: inventory_hostname in groups['ecoma_cpl']
"""

# A cloud node's ansible_host is a MagicDNS name: its node IP comes from `tailscale ip -4`,
# which does not exist here, so the test gives it one.
WKR_NODE_IP = "100.64.0.21"
# The S3 credentials of the etcd snapshots, made up per run (the sample inventory names a target).
S3_ACCESS_KEY_ID = "AKIA" + secrets.token_hex(8).upper()
S3_SECRET_KEY = secrets.token_urlsafe(30).replace("-", "+").replace("_", "/")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("k3s-render")
    out = work / "out"
    playbook = work / "render.yml"
    playbook.write_text(
        RENDER_PLAYBOOK.format(python=sys.executable, out=out, roles=ANSIBLE_DIR / "roles")
    )
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
        ECOMA_ETCD_S3_ACCESS_KEY_ID=S3_ACCESS_KEY_ID,
        ECOMA_ETCD_S3_SECRET_ACCESS_KEY=S3_SECRET_KEY,
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
    # Kubelets keep the servers' cluster-dns (the kube-dns address NodeLocal DNS also answers on).
    assert config["kubelet-arg"] == []
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
    assert config["kubelet-arg"] == []
    assert "cluster-init" not in config


def test_server_labels_are_not_set_by_the_kubelet(rendered: dict[str, Path]) -> None:
    for host in rendered:
        labels = _config(rendered, host)["node-label"]
        assert not [label for label in labels if "kubernetes.io/" in label], host


# --------------------------------------------------------------------------------------------
# etcd snapshots, the unit, NodeLocal DNS


def test_servers_take_scheduled_etcd_snapshots_to_the_stacks_s3_target(
    rendered: dict[str, Path],
) -> None:
    for server in ("cpl-1", "cpl-2"):
        config = _config(rendered, server)
        assert config["etcd-snapshot-schedule-cron"] == "0 */6 * * *"
        assert config["etcd-snapshot-retention"] == 28
        assert config["etcd-snapshot-compress"] is True
        assert config["etcd-s3"] is True
        assert config["etcd-s3-endpoint"] == "s3.eu-central-1.amazonaws.com"
        assert config["etcd-s3-bucket"] == "ecoma-sample-etcd"
        assert config["etcd-s3-folder"] == "sample"
        assert config["etcd-s3-region"] == "eu-central-1"
        assert "etcd-s3-insecure" not in config
        assert "etcd-s3-skip-ssl-verify" not in config
        # The credentials never enter config.yaml, in any form.
        text = (rendered[server] / "config.yaml").read_text()
        assert "access-key" not in text
        assert "secret-key" not in text
        assert S3_ACCESS_KEY_ID not in text
        assert S3_SECRET_KEY not in text


def test_the_s3_credentials_are_a_root_only_environment_file_of_the_server_unit(
    rendered: dict[str, Path],
) -> None:
    env_file = rendered["cpl-1"] / "etcd-s3.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert values == {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    unit = (rendered["cpl-1"] / "k3s.service").read_text()
    assert f"EnvironmentFile=-{env_file}" in unit.splitlines()
    for agent in ("ops-1", "sts-1", "wkr-aws-1"):
        assert not (rendered[agent] / "etcd-s3.env").exists(), agent
        assert "etcd" not in (rendered[agent] / "k3s.service").read_text(), agent
        assert "etcd-s3" not in _config(rendered, agent), agent


def test_k3s_follows_tailscaled_restarts(rendered: dict[str, Path]) -> None:
    for host in ("cpl-1", "sts-1", "wkr-aws-1"):
        unit = (rendered[host] / "k3s.service").read_text().splitlines()
        assert "PartOf=tailscaled.service" in unit, host
        assert "After=network-online.target tailscaled.service" in unit, host
        assert "Wants=network-online.target tailscaled.service" in unit, host
        assert any(line.startswith("ExecStartPre=") and "tailscale0" in line for line in unit)


def test_the_unit_passes_systemd_analyze_verify(rendered: dict[str, Path], tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = tmp_path / "k3s.service"
    unit.write_text((rendered["cpl-1"] / "k3s.service").read_text())
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    # The unit names binaries this machine lacks (k3s, tailscaled): only those may be reported.
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "k3s" not in line and "tailscaled" not in line
    ]
    assert problems == [], result.stdout + result.stderr


def _manifests(rendered: dict[str, Path]) -> list[dict]:
    return list(yaml.safe_load_all((rendered["cpl-1"] / "nodelocaldns.yaml").read_text()))


def test_nodelocal_dns_binds_both_addresses_and_forwards_to_a_separate_upstream_service(
    rendered: dict[str, Path],
) -> None:
    documents = _manifests(rendered)
    kinds = [(d["kind"], d["metadata"]["name"]) for d in documents]
    # The Service first: node-cache reads its address from the pod's service environment, which
    # only holds Services that existed when the pod started.
    assert kinds[0] == ("Service", "kube-dns-upstream")
    assert ("DaemonSet", "node-local-dns") in kinds
    upstream = documents[0]
    assert upstream["metadata"]["namespace"] == "kube-system"
    assert upstream["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert upstream["metadata"]["labels"] != {"k8s-app": "kube-dns"}
    assert sorted((p["protocol"], p["port"]) for p in upstream["spec"]["ports"]) == [
        ("TCP", 53),
        ("UDP", 53),
    ]
    daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[args.index("-localip") + 1] == "169.254.20.10,10.43.0.10"
    assert args[args.index("-upstreamsvc") + 1] == "kube-dns-upstream"
    assert "-skipteardown" not in args
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "Default"
    assert container["image"] == "registry.k8s.io/dns/k8s-dns-node-cache:1.26.4"
    corefile = next(d for d in documents if d["kind"] == "ConfigMap")["data"]["Corefile"]
    zones = re.findall(r"^(\S+):53 \{", corefile, re.M)
    assert zones == ["cluster.local", "in-addr.arpa", "ip6.arpa", "."]
    binds = re.findall(r"^\s+bind (.+)$", corefile, re.M)
    assert binds == ["169.254.20.10 10.43.0.10"] * 4
    forwards = re.findall(r"^\s+forward \. (\S+)", corefile, re.M)
    # node-cache fills these two itself: the upstream Service's address and resolv.conf.
    assert forwards == ["__PILLAR__CLUSTER__DNS__"] * 3 + ["__PILLAR__UPSTREAM__SERVERS__"]
    assert "10.43.0.10" not in " ".join(forwards)
    left = set(re.findall(r"__PILLAR__[A-Z_]+__", yaml.safe_dump_all(documents)))
    assert left == {"__PILLAR__CLUSTER__DNS__", "__PILLAR__UPSTREAM__SERVERS__"}


def test_every_server_deploys_the_same_nodelocal_dns_manifest(rendered: dict[str, Path]) -> None:
    first = (rendered["cpl-1"] / "nodelocaldns.yaml").read_text()
    assert (rendered["cpl-2"] / "nodelocaldns.yaml").read_text() == first


def test_nodelocal_dns_manifest_is_valid_kubernetes_for_the_pinned_minor(
    rendered: dict[str, Path], tmp_path: Path
) -> None:
    """kubernetes-validate (strict: unknown fields are errors) against the schemas of the
    Kubernetes minor that the pinned k3s release runs."""
    sample = yaml.safe_load(SAMPLE_INVENTORY.read_text())
    version = sample["all"]["vars"]["ecoma_cluster"]["k3s_version"]
    minor = re.fullmatch(r"v(1\.\d+)\.\d+\+k3s\d+", version)
    assert minor is not None, version
    manifest = tmp_path / "nodelocaldns.yaml"
    manifest.write_text((rendered["cpl-1"] / "nodelocaldns.yaml").read_text())
    argv = [_tool("kubernetes-validate"), "--strict", "-k", minor.group(1), str(manifest)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource (\S+)", result.stdout + result.stderr)
    assert sorted(passed) == sorted(
        f"{d['kind'].lower()}/{d['metadata']['name']}" for d in _manifests(rendered)
    )


def test_kubernetes_validate_rejects_a_broken_manifest(tmp_path: Path) -> None:
    """The check above can fail: a misspelt field is an error in strict mode."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: kube-system}\n"
        "spec: {selectr: {k8s-app: kube-dns}, ports: [{port: 53}]}\n"
    )
    argv = [_tool("kubernetes-validate"), "--strict", "-k", "1.32", str(broken)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "selectr" in result.stdout + result.stderr

"""`ecoma-infra doctor` against simulated platforms: the Proxmox VE API over HTTPS (its own
self-signed certificate, verified through REQUESTS_CA_BUNDLE), the Tailscale API v2 and DNS
resolvers, each a real server on 127.0.0.1 (tests/simulated_apis.py). A healthy simulated site
exits 0; each check has a failing case that asserts the fix it prints; a check without its
credential says "not checked", never "ok"."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from simulated_apis import SimulatedProxmox, SimulatedResolver, SimulatedTailscale
from stacks import stack_variant

from ecoma_infra.cli import main as cli
from ecoma_infra.ops.doctor import dns as doctor_dns
from ecoma_infra.ops.doctor.clouds import oci_fingerprint
from ecoma_infra.platforms import dns as dns_platform

ENV = (
    "PROXMOX_VE_API_TOKEN",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "TAILSCALE_API_KEY",
    "TAILSCALE_OAUTH_CLIENT_ID",
    "TAILSCALE_OAUTH_CLIENT_SECRET",
    "TAILSCALE_BASE_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "GOOGLE_CREDENTIALS",
    "OCI_PRIVATE_KEY",
)
ALL_SCOPES = "auth_keys devices:core devices:routes policy_file"
NAMES = {"deb.debian.org": "151.101.2.132", "pkgs.tailscale.com": "199.38.181.239"}
TEMPLATE_CONFIG = {
    "template": 1,
    "boot": "order=virtio0",
    "virtio0": "local-lvm:base-9000-disk-0,iothread=1,size=2G",
    "ide2": "local-lvm:vm-9000-cloudinit,media=cdrom",
    "serial0": "socket",
    "vga": "serial0",
}
Change = Callable[[dict[str, Any]], None]


@dataclass
class Site:
    """A simulated site for the staging stack: one hypervisor with its datastores and template
    9000, a Tailscale tailnet, and the stack's two public resolvers."""

    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    proxmox: SimulatedProxmox
    tailscale: SimulatedTailscale
    resolvers: dict[str, SimulatedResolver]
    token: str = ""
    changes: list[Change] = field(default_factory=list)
    out: str = ""
    err: str = ""

    def change(self, change: Change) -> None:
        self.changes.append(change)

    def run(self, *extra: str) -> int:
        def apply(config: dict[str, Any]) -> None:
            config["ecoma:proxmox"]["endpoint"] = self.proxmox.url + "/"
            config["ecoma:proxmox"]["insecure"] = False
            config["ecoma:tailscale"]["oauth_client_id"] = self.tailscale.client_id
            for change in self.changes:
                change(config)

        path = stack_variant(self.tmp_path, "staging", apply)
        code = cli.main(["doctor", "--file", str(path), *extra])
        self.out, self.err = self.capsys.readouterr()
        return code

    def report(self, *extra: str) -> tuple[int, dict[str, Any]]:
        code = self.run("--json", *extra)
        return code, json.loads(self.out)

    def secrets(self) -> list[str]:
        return [
            self.token.partition("=")[2],
            self.tailscale.client_secret,
            *self.tailscale.access_tokens,
        ]


def find(document: dict[str, Any], area: str, name: str) -> dict[str, Any]:
    matches = [c for c in document["checks"] if c["area"] == area and c["check"] == name]
    assert len(matches) == 1, [c["check"] for c in document["checks"] if c["area"] == area]
    return matches[0]


def healthy_proxmox(proxmox: SimulatedProxmox) -> str:
    proxmox.add_node("pve-stg1")
    proxmox.add_storage("pve-stg1", "local-lvm", "images,rootdir", kind="lvmthin")
    proxmox.add_storage("pve-stg1", "local", "iso,vztmpl,backup,snippets,import")
    proxmox.add_vm(
        9000, "pve-stg1", "debian12", tags="template", template=True, config=dict(TEMPLATE_CONFIG)
    )
    return proxmox.add_token("ci-20250301", grants=(("/", "Administrator"),))


@pytest.fixture
def site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Site]:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    with (
        SimulatedProxmox() as proxmox,
        SimulatedTailscale(tailnet="ecoma-staging.github") as tailscale,
        SimulatedResolver(NAMES) as first,
        SimulatedResolver(NAMES) as second,
    ):
        token = healthy_proxmox(proxmox)
        tailscale.client_scopes = ALL_SCOPES
        tailscale.policy["tagOwners"] = {"tag:ecoma-ci": ["autogroup:admin"]}
        tailscale.add_device("laptop-ops", tags=())
        tailscale.add_device("exit-1", tags=(), routes=("0.0.0.0/0", "::/0"))
        resolvers = {"1.1.1.1": first, "9.9.9.9": second}

        def ask(server: str, name: str, **_: Any) -> dns_platform.ResolverAnswer:
            # The stack's resolvers (public addresses) are played by local servers.
            answer = dns_platform.ask(
                "127.0.0.1", name, port=resolvers[server].port, timeout=0.3, lifetime=0.6
            )
            return dns_platform.ResolverAnswer(
                server, name, answer.outcome, answer.addresses, answer.detail
            )

        monkeypatch.setattr(doctor_dns, "ask", ask)
        assert proxmox.certificate is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", proxmox.certificate)
        monkeypatch.setenv("PROXMOX_VE_API_TOKEN", token)
        monkeypatch.setenv("TAILSCALE_OAUTH_CLIENT_SECRET", tailscale.client_secret)
        monkeypatch.setenv("TAILSCALE_BASE_URL", tailscale.url)
        yield Site(tmp_path, monkeypatch, capsys, proxmox, tailscale, resolvers, token)


def assert_failed(site: Site, area: str, name: str, *, fix: str, detail: str = "") -> None:
    code, document = site.report()
    found = find(document, area, name)
    assert code == 1, found
    assert found["status"] == "fail", found
    assert fix in found["fix"], found["fix"]
    assert detail in found["detail"], found["detail"]
    assert document["ok"] is False
    for secret in site.secrets():
        assert secret not in site.out + site.err


# --------------------------------------------------------------------------- healthy


def test_simulated_healthy_site_exits_0_with_every_live_check_ok(site: Site) -> None:
    code, document = site.report()

    assert code == 0, site.out
    statuses = {(c["area"], c["check"]): c["status"] for c in document["checks"]}
    live = {k: v for k, v in statuses.items() if k[0] in ("proxmox", "tailscale", "dns")}
    assert set(live.values()) == {"ok"}, live
    assert {
        ("proxmox", "api"),
        ("proxmox", "privileges"),
        ("proxmox", "hypervisor pve-stg1"),
        ("proxmox", "datastore local on pve-stg1"),
        ("proxmox", "datastore local-lvm on pve-stg1"),
        ("proxmox", "template 9000 is a template"),
        ("proxmox", "template 9000 cloud-init drive"),
        ("proxmox", "template 9000 boot"),
        ("proxmox", "template 9000 disk size"),
        ("proxmox", "sdn zone ecoma"),
        ("proxmox", "sdn vnet ecomanet"),
        ("proxmox", "vm id 4101 (cpl-1)"),
        ("tailscale", "credential"),
        ("tailscale", "scopes"),
        ("tailscale", "tags"),
        ("tailscale", "policy valid"),
        ("tailscale", "policy overwrite"),
        ("tailscale", "routes"),
        ("dns", "resolver 1.1.1.1"),
        ("dns", "resolver 9.9.9.9"),
    } <= set(live)
    assert "TLS verified" in find(document, "proxmox", "api")["detail"]
    # No cloud credential in the environment: the clouds are not checked, and say why.
    clouds = [c for c in document["checks"] if c["area"] in ("aws", "gcp", "oci")]
    assert clouds
    assert {c["status"] for c in clouds} == {"not checked"}
    assert all(c["detail"] for c in clouds)
    # The policy `up` would write was validated by Tailscale, not applied.
    assert site.tailscale.validated[-1]["tagOwners"]["tag:ecoma-cpl"] == [
        "tag:ecoma-ci",
        "autogroup:admin",
    ]
    assert site.resolvers["1.1.1.1"].asked == ["deb.debian.org", "pkgs.tailscale.com"]


def test_simulated_human_output_lists_checks_by_area_and_ends_with_the_verdict(
    site: Site,
) -> None:
    code = site.run()

    lines = site.out.splitlines()
    assert code == 0
    assert lines[0].startswith("doctor staging (")
    assert {"proxmox", "tailscale", "aws", "gcp", "oci", "dns"} <= set(lines)
    assert any(line.split()[:2] == ["ok", "privileges"] for line in lines)
    assert lines[-1].endswith(": ready")
    for secret in site.secrets():
        assert secret not in site.out + site.err


def test_simulated_strict_fails_on_what_was_not_checked(site: Site) -> None:
    code, document = site.report("--strict")

    assert code == 1
    assert document["strict"] is True
    assert document["counts"]["fail"] == 0
    assert document["counts"]["not checked"] > 0


def test_without_any_credential_nothing_is_ok_that_was_not_checked(site: Site) -> None:
    for name in ("PROXMOX_VE_API_TOKEN", "TAILSCALE_OAUTH_CLIENT_SECRET"):
        site.monkeypatch.delenv(name)

    code, document = site.report()

    assert code == 0
    for check in document["checks"]:
        if check["area"] in ("proxmox", "tailscale"):
            assert check["status"] == "not checked", check
    assert "PROXMOX_VE_API_TOKEN is not set" in find(document, "proxmox", "api")["detail"]
    assert "export PROXMOX_VE_API_TOKEN=" in find(document, "proxmox", "api")["fix"]
    credential = find(document, "tailscale", "credential")
    assert "TAILSCALE_OAUTH_CLIENT_SECRET is not set" in credential["detail"]
    assert site.proxmox.seen == []
    assert site.tailscale.seen == []


# --------------------------------------------------------------------------- Proxmox


def test_simulated_proxmox_malformed_token_is_named_not_shown(site: Site) -> None:
    malformed = "ci@pve-" + site.token.partition("=")[2]  # no !TOKENID=
    site.monkeypatch.setenv("PROXMOX_VE_API_TOKEN", malformed)

    assert_failed(
        site, "proxmox", "api", fix="export PROXMOX_VE_API_TOKEN as USER@REALM!TOKENID=SECRET"
    )
    assert malformed not in site.out


def test_simulated_proxmox_refused_token(site: Site) -> None:
    site.monkeypatch.setenv("PROXMOX_VE_API_TOKEN", site.token[:-4] + "0000")

    assert_failed(site, "proxmox", "api", fix="export a valid, unexpired token", detail="HTTP 401")
    _, document = site.report()
    assert find(document, "proxmox", "template")["status"] == "not checked"


def test_simulated_proxmox_self_signed_certificate_is_not_trusted_by_default(
    site: Site,
) -> None:
    site.monkeypatch.delenv("REQUESTS_CA_BUNDLE")

    assert_failed(
        site,
        "proxmox",
        "api",
        fix="set ecoma:proxmox.insecure: true",
        detail="the TLS handshake failed",
    )


def test_simulated_proxmox_too_old(site: Site) -> None:
    site.proxmox.version = {"version": "7.4-3", "release": "7.4", "repoid": "9002ab8a"}

    assert_failed(site, "proxmox", "api", fix="upgrade the cluster to PVE 8 or 9")


def test_simulated_proxmox_token_without_the_privileges_up_needs(site: Site) -> None:
    site.proxmox.acl = [e for e in site.proxmox.acl if e["roleid"] != "Administrator"]
    full = site.token.partition("=")[0]
    site.proxmox.acl += [
        {"path": "/", "type": "token", "ugid": full, "roleid": "PVEVMAdmin", "propagate": 1},
        {
            "path": "/storage",
            "type": "token",
            "ugid": full,
            "roleid": "PVEDatastoreUser",
            "propagate": 0,
        },
    ]

    assert_failed(
        site,
        "proxmox",
        "privileges",
        fix=f"pveum acl modify <path> --users ci@pve --tokens {full} --roles EcomaInfra",
        detail="/sdn: SDN.Allocate",
    )
    _, document = site.report()
    detail = find(document, "proxmox", "privileges")["detail"]
    # Granted on /storage without propagation: not on /storage/local-lvm.
    assert "/storage/local-lvm: Datastore.AllocateSpace, Datastore.Audit" in detail
    assert "VM.Config.Network" in detail  # PVEVMAdmin here lacks it
    assert "VM.Clone" not in detail


def test_simulated_proxmox_unknown_hypervisor(site: Site) -> None:
    site.proxmox.nodes = {"pve-other": "online"}

    assert_failed(
        site,
        "proxmox",
        "hypervisor pve-stg1",
        fix="correct ecoma:proxmox.hypervisors",
        detail="it has: pve-other",
    )


def test_simulated_proxmox_offline_hypervisor(site: Site) -> None:
    site.proxmox.nodes["pve-stg1"] = "offline"

    assert_failed(site, "proxmox", "hypervisor pve-stg1", fix="start pve-stg1")
    _, document = site.report()
    assert find(document, "proxmox", "datastore local on pve-stg1")["status"] == "not checked"


def test_simulated_proxmox_missing_datastore(site: Site) -> None:
    del site.proxmox.storage["pve-stg1"]["local-lvm"]

    assert_failed(
        site,
        "proxmox",
        "datastore local-lvm on pve-stg1",
        fix="add local-lvm for pve-stg1",
        detail="or ci@pve!ci-20250301 lacks Datastore.Audit on /storage/local-lvm",
    )


def test_simulated_proxmox_snippets_datastore_without_snippets(site: Site) -> None:
    site.proxmox.storage["pve-stg1"]["local"]["content"] = "iso,vztmpl,backup"

    assert_failed(
        site,
        "proxmox",
        "datastore local on pve-stg1",
        fix="`pvesm set local --content backup,iso,snippets,vztmpl`",
        detail="not snippets",
    )


def test_simulated_proxmox_disabled_datastore(site: Site) -> None:
    site.proxmox.storage["pve-stg1"]["local-lvm"]["active"] = 0

    assert_failed(
        site, "proxmox", "datastore local-lvm on pve-stg1", fix="`pvesm set local-lvm --disable 0`"
    )


def test_simulated_proxmox_missing_template(site: Site) -> None:
    del site.proxmox.vms[9000]

    assert_failed(
        site,
        "proxmox",
        "template 9000",
        fix="set ecoma:proxmox.template_image to have `up` make it",
        detail="does not exist",
    )


def test_simulated_proxmox_template_the_token_cannot_see(site: Site) -> None:
    site.proxmox.hidden.add(9000)

    assert_failed(site, "proxmox", "template 9000", fix="grant VM.Audit and VM.Clone on /vms/9000")


def test_simulated_proxmox_template_on_another_node(site: Site) -> None:
    site.proxmox.add_node("pve-stg2")
    site.proxmox.vms[9000].node = "pve-stg2"

    assert_failed(site, "proxmox", "template 9000", fix="set ecoma:proxmox.template_node: pve-stg2")


def test_simulated_proxmox_template_that_is_a_plain_vm(site: Site) -> None:
    site.proxmox.vms[9000].config["template"] = 0

    assert_failed(
        site, "proxmox", "template 9000 is a template", fix="run `qm template 9000` on pve-stg1"
    )


def test_simulated_proxmox_template_without_cloud_init_drive(site: Site) -> None:
    del site.proxmox.vms[9000].config["ide2"]
    site.proxmox.vms[9000].config["ide0"] = "local:iso/debian.iso,media=cdrom"

    assert_failed(
        site,
        "proxmox",
        "template 9000 cloud-init drive",
        fix="`qm set 9000 --ide2 local-lvm:cloudinit`",
    )


def test_simulated_proxmox_template_booting_from_another_interface(site: Site) -> None:
    config = site.proxmox.vms[9000].config
    config["scsi0"] = config.pop("virtio0")
    config["boot"] = "order=scsi0;ide2"

    assert_failed(
        site,
        "proxmox",
        "template 9000 boot",
        fix="set ecoma:proxmox.template_boot_interface: scsi0",
        detail="boots from scsi0",
    )


def test_simulated_proxmox_template_boot_device_without_a_disk(site: Site) -> None:
    site.proxmox.vms[9000].config["virtio0"] = "none,media=cdrom"

    assert_failed(site, "proxmox", "template 9000 boot", fix="attach the image disk at virtio0")


def test_simulated_proxmox_legacy_boot_order_warns(site: Site) -> None:
    site.proxmox.vms[9000].config["boot"] = "cdn"

    code, document = site.report()

    found = find(document, "proxmox", "template 9000 boot")
    assert (code, found["status"]) == (0, "warn")
    assert found["fix"] == "`qm set 9000 --boot order=virtio0`"


def test_simulated_proxmox_template_disk_larger_than_an_os_disk(site: Site) -> None:
    site.proxmox.vms[9000].config["virtio0"] = "local-lvm:base-9000-disk-0,size=40G"

    assert_failed(
        site,
        "proxmox",
        "template 9000 disk size",
        fix="give those OS disks at least 40 GB",
        detail="cpl-1 (32 GB)",
    )


def test_simulated_proxmox_sdn_zone_of_another_type(site: Site) -> None:
    site.proxmox.zones["ecoma"] = {"zone": "ecoma", "type": "vxlan", "peers": "10.0.0.1"}

    assert_failed(
        site,
        "proxmox",
        "sdn zone ecoma",
        fix="name another zone in ecoma:proxmox.sdn.zone, or set kind: vxlan",
    )


def test_simulated_proxmox_sdn_vnet_in_another_zone(site: Site) -> None:
    site.proxmox.vnets["ecomanet"] = {"vnet": "ecomanet", "zone": "lab"}

    assert_failed(
        site, "proxmox", "sdn vnet ecomanet", fix="name another vnet in ecoma:proxmox.sdn.vnet"
    )


def test_simulated_proxmox_without_sdn(site: Site) -> None:
    site.proxmox.sdn_available = False

    assert_failed(site, "proxmox", "sdn", fix="apt install libpve-network-perl")


def test_simulated_proxmox_vlan_zone_without_its_bridge(site: Site) -> None:
    site.change(
        lambda c: c["ecoma:proxmox"].update(sdn={"kind": "vlan", "bridge": "vmbr1", "tag": 41})
    )

    assert_failed(
        site,
        "proxmox",
        "sdn bridge vmbr1 on pve-stg1",
        fix="create vmbr1 on pve-stg1 on the trunk that carries VLAN 41",
        detail="it has: vmbr0",
    )
    site.proxmox.bridges_need_audit = True
    _, document = site.report()
    found = find(document, "proxmox", "sdn bridge vmbr1 on pve-stg1")
    assert found["status"] == "not checked"
    assert "Sys.Audit on /nodes/pve-stg1" in found["detail"]


def test_simulated_proxmox_vm_id_taken_by_someone_else(site: Site) -> None:
    site.proxmox.add_vm(4101, "pve-stg1", "gitlab", tags="infra")

    assert_failed(
        site,
        "proxmox",
        "vm id 4101 (cpl-1)",
        fix="choose a free vm_id for cpl-1 in ecoma:nodes",
        detail="taken by 'gitlab' on pve-stg1 (tags: infra)",
    )


def test_simulated_proxmox_vm_id_taken_by_a_vm_the_token_cannot_see(site: Site) -> None:
    site.proxmox.add_vm(4201, "pve-stg1", "secret-thing")
    site.proxmox.hidden.add(4201)

    assert_failed(
        site,
        "proxmox",
        "vm id 4201 (ops-1)",
        fix="grant VM.Audit on /vms/4201",
        detail="cannot see",
    )


def test_simulated_proxmox_vm_id_already_this_stacks(site: Site) -> None:
    site.proxmox.add_vm(4101, "pve-stg1", "cpl-1", tags="cpl;ecoma;staging")
    site.proxmox.add_vm(4201, "pve-stg1", "ops-1", tags="ecoma;prod;ops")  # prod's, not ours

    code, document = site.report()

    assert find(document, "proxmox", "vm id 4101 (cpl-1)")["status"] == "ok"
    assert find(document, "proxmox", "vm id 4201 (ops-1)")["status"] == "fail"
    assert code == 1


# --------------------------------------------------------------------------- template as code

BUILD = "20250210-2019"
IMAGE = {
    "url": f"https://cloud.debian.org/images/cloud/bookworm/{BUILD}/"
    f"debian-12-genericcloud-amd64-{BUILD}.qcow2",
    "sha512": "ab" * 64,
    "datastore": "local-lvm",
}


def with_image(config: dict[str, Any]) -> None:
    config["ecoma:proxmox"]["template_image"] = dict(IMAGE)


def test_simulated_template_as_code_on_a_new_site_is_made_by_up(site: Site) -> None:
    del site.proxmox.vms[9000]
    site.change(with_image)

    code, document = site.report()

    assert code == 0, site.out
    assert "`up` makes it" in find(document, "proxmox", "template 9000")["detail"]
    assert find(document, "proxmox", "datastore local on pve-stg1")["detail"].startswith(
        "local takes import, snippets on pve-stg1"
    )
    assert "template 9000 boot" not in {c["check"] for c in document["checks"]}


def test_simulated_template_as_code_over_a_hand_made_template(site: Site) -> None:
    site.change(with_image)

    assert_failed(
        site,
        "proxmox",
        "template 9000",
        fix="remove ecoma:proxmox.template_image to use the existing template",
        detail="already exists and is not this stack's",
    )


def test_simulated_template_as_code_needs_import_content(site: Site) -> None:
    del site.proxmox.vms[9000]
    site.proxmox.storage["pve-stg1"]["local"]["content"] = "iso,snippets"
    site.change(with_image)

    assert_failed(
        site,
        "proxmox",
        "datastore local on pve-stg1",
        fix="`pvesm set local --content import,iso,snippets`",
        detail="`import` needs a directory storage on PVE 8.3+",
    )


def test_simulated_template_as_code_needs_pve_8_3(site: Site) -> None:
    del site.proxmox.vms[9000]
    site.proxmox.version = {"version": "8.2.7", "release": "8.2", "repoid": "3e76eec2"}
    site.change(with_image)

    assert_failed(site, "proxmox", "api", fix="upgrade to PVE 8.3 or later")


# --------------------------------------------------------------------------- Tailscale


def test_simulated_tailscale_wrong_oauth_secret(site: Site) -> None:
    site.monkeypatch.setenv(
        "TAILSCALE_OAUTH_CLIENT_SECRET", site.tailscale.client_secret[:-4] + "0000"
    )

    assert_failed(
        site,
        "tailscale",
        "credential",
        fix="TAILSCALE_OAUTH_CLIENT_SECRET is its current secret",
        detail="HTTP 401",
    )


def test_simulated_tailscale_oauth_client_without_the_scopes_up_needs(site: Site) -> None:
    site.tailscale.client_scopes = "devices:core auth_keys"

    assert_failed(
        site,
        "tailscale",
        "scopes",
        fix="make an OAuth client with the scopes auth_keys, devices:core, devices:routes, "
        "policy_file (write) and the tag tag:ecoma-ci",
        detail="lacks devices:routes, policy_file",
    )
    _, document = site.report()
    assert find(document, "tailscale", "tags")["status"] == "fail"  # policy unreadable: 403


def test_simulated_tailscale_unlisted_scopes_are_probed_not_assumed(site: Site) -> None:
    site.tailscale.say_scopes = False

    code, document = site.report()

    found = find(document, "tailscale", "scopes")
    assert (code, found["status"]) == (0, "warn")
    assert find(document, "tailscale", "policy valid")["status"] == "ok"


def test_simulated_tailscale_ci_tag_missing_from_the_policy(site: Site) -> None:
    site.tailscale.policy.pop("tagOwners")

    assert_failed(
        site,
        "tailscale",
        "tags",
        fix='add "tag:ecoma-ci": ["autogroup:admin"] to tagOwners',
        detail="does not define tag:ecoma-ci",
    )


def test_simulated_tailscale_role_tag_owned_otherwise_warns(site: Site) -> None:
    site.tailscale.policy["tagOwners"]["tag:ecoma-wkr"] = ["group:ops"]

    code, document = site.report()

    found = find(document, "tailscale", "tags")
    assert (code, found["status"]) == (0, "warn")
    assert "tag:ecoma-wkr (owned by group:ops)" in found["detail"]


def test_simulated_tailscale_refuses_the_policy_up_would_write(site: Site) -> None:
    site.tailscale.validate_message = "test(s) failed"

    assert_failed(
        site,
        "tailscale",
        "policy valid",
        fix="ecoma:tailscale.admins must be users of the tailnet",
        detail="Tailscale refuses the policy `up` would write: test(s) failed",
    )


def test_simulated_tailscale_another_stacks_policy_would_be_erased(site: Site) -> None:
    site.tailscale.policy["tagOwners"]["tag:shop-wkr"] = ["tag:shop-ci"]
    site.tailscale.policy["hosts"] = {"shop-vip": "10.70.1.254"}
    site.tailscale.policy["autoApprovers"] = {"routes": {"10.70.1.0/24": ["tag:shop-cpl"]}}

    assert_failed(
        site,
        "tailscale",
        "policy overwrite",
        fix="give this stack a tailnet of its own (ecoma:tailscale.tailnet)",
        detail="tagOwners: tag:shop-wkr; hosts: shop-vip; autoApprovers.routes: 10.70.1.0/24",
    )


def test_simulated_tailscale_hand_made_rules_warn_before_they_are_replaced(site: Site) -> None:
    site.tailscale.policy["acls"] = [{"action": "accept", "src": ["group:ops"], "dst": ["*:22"]}]
    site.tailscale.policy["nodeAttrs"] = [{"target": ["*"], "attr": ["funnel"]}]

    code, document = site.report()

    found = find(document, "tailscale", "policy overwrite")
    assert (code, found["status"]) == (0, "warn")
    assert "drops its nodeAttrs, ssh" in found["detail"]


def test_simulated_tailscale_another_site_routes_the_same_subnet(site: Site) -> None:
    site.tailscale.add_device("router-b", tags=("tag:shop-cpl",), routes=("10.41.0.0/16",))
    site.tailscale.add_device("cpl-1", tags=("tag:ecoma-cpl",), routes=("10.41.1.0/24",))

    assert_failed(
        site,
        "tailscale",
        "routes",
        fix="give this site another ecoma:network.sdn_subnet",
        detail="router-b routes 10.41.0.0/16, overlapping the SDN subnet 10.41.1.0/24",
    )
    _, document = site.report()
    assert "cpl-1" not in find(document, "tailscale", "routes")["detail"]  # this stack's own


def test_simulated_tailscale_route_over_a_burst_pool_vpc(site: Site) -> None:
    site.tailscale.add_device("office", tags=(), routes=("10.60.0.0/20",))

    assert_failed(
        site,
        "tailscale",
        "routes",
        fix="or the pool another vpc_cidr",
        detail="overlapping the aws pool's VPC 10.60.0.0/16",
    )


def test_simulated_tailscale_api_key_reads_when_the_oauth_secret_is_absent(site: Site) -> None:
    site.monkeypatch.delenv("TAILSCALE_OAUTH_CLIENT_SECRET")
    site.monkeypatch.setenv("TAILSCALE_API_KEY", site.tailscale.api_key)

    code, document = site.report()

    assert code == 0
    assert find(document, "tailscale", "credential")["status"] == "not checked"
    assert find(document, "tailscale", "scopes")["status"] == "not checked"
    assert find(document, "tailscale", "routes")["status"] == "ok"
    assert site.tailscale.api_key not in site.out


# --------------------------------------------------------------------------- DNS


def test_simulated_public_resolver_that_never_answers(site: Site) -> None:
    site.resolvers["9.9.9.9"].mode = "silent"

    assert_failed(
        site,
        "dns",
        "resolver 9.9.9.9",
        fix="name resolvers that answer in ecoma:network.dns_servers",
        detail="no answer from 9.9.9.9",
    )


def test_simulated_resolver_that_refuses(site: Site) -> None:
    site.resolvers["1.1.1.1"].mode = "refuse"

    assert_failed(
        site,
        "dns",
        "resolver 1.1.1.1",
        fix="name recursive resolvers that serve the SDN subnet",
        detail="SERVFAIL/REFUSED",
    )


def test_simulated_resolver_that_does_not_know_a_first_boot_name(site: Site) -> None:
    del site.resolvers["1.1.1.1"].records["pkgs.tailscale.com"]

    assert_failed(
        site,
        "dns",
        "resolver 1.1.1.1",
        fix="name resolvers that resolve public names",
        detail="says pkgs.tailscale.com has no address (nxdomain)",
    )


def test_simulated_private_resolver_silent_from_here_warns(site: Site) -> None:
    site.resolvers["192.168.10.53"] = site.resolvers.pop("9.9.9.9")
    site.resolvers["192.168.10.53"].mode = "silent"
    site.change(lambda c: c["ecoma:network"].update(dns_servers=["1.1.1.1", "192.168.10.53"]))

    code, document = site.report()

    found = find(document, "dns", "resolver 192.168.10.53")
    assert (code, found["status"]) == (0, "warn")
    assert "dig @192.168.10.53 deb.debian.org" in found["fix"]


def test_resolver_inside_the_sdn_is_not_checked_from_here(site: Site) -> None:
    site.change(lambda c: c["ecoma:network"].update(dns_servers=["10.41.1.53"]))

    code, document = site.report()

    found = find(document, "dns", "resolver 10.41.1.53")
    assert (code, found["status"]) == (0, "not checked")
    assert "only the nodes reach it" in found["detail"]


# --------------------------------------------------------------------------- clouds


def rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_oci_key_that_does_not_match_the_pools_fingerprint(site: Site) -> None:
    pem = rsa_pem()
    site.monkeypatch.setenv("OCI_PRIVATE_KEY", pem)

    assert_failed(
        site,
        "oci",
        "credential form",
        fix=f"set ecoma:burst.oci.fingerprint: {oci_fingerprint(pem)}",
        detail="OCI would refuse every signed request",
    )
    assert pem not in site.out


def test_oci_key_that_matches_and_what_stays_unchecked(site: Site) -> None:
    pem = rsa_pem()
    fingerprint = oci_fingerprint(pem)
    site.monkeypatch.setenv("OCI_PRIVATE_KEY", pem)
    site.change(lambda c: c["ecoma:burst"]["oci"].update(fingerprint=fingerprint))

    code, document = site.report()

    assert code == 0
    assert find(document, "oci", "credential form")["status"] == "ok"
    for name in ("credential accepted", "image", "instance type"):
        found = find(document, "oci", name)
        assert found["status"] == "not checked"
        assert "no OCI SDK here" in found["detail"]
        assert (
            found["fix"]
            == "`pulumi preview --stack staging` with the stack's credentials checks it"
        )


def test_oci_fingerprint_is_the_md5_of_the_public_key_in_der() -> None:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    pem = rsa_pem()
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.md5(der, usedforsecurity=False).hexdigest()

    assert oci_fingerprint(pem) == ":".join(digest[i : i + 2] for i in range(0, 32, 2))
    assert oci_fingerprint("not a key") is None


def jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_aws_expired_oidc_token(site: Site, tmp_path: Path) -> None:
    token = tmp_path / "oidc-token"
    token.write_text(jwt({"aud": "sts.amazonaws.com", "exp": time.time() - 120, "sub": "repo:x"}))
    site.monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))

    assert_failed(
        site,
        "aws",
        "credential form",
        fix="request a fresh token with audience sts.amazonaws.com",
        detail="it expired",
    )


def test_aws_fresh_oidc_token_is_well_formed_and_the_rest_unchecked(
    site: Site, tmp_path: Path
) -> None:
    token = tmp_path / "oidc-token"
    token.write_text(jwt({"aud": "sts.amazonaws.com", "exp": time.time() + 300, "sub": "repo:x"}))
    site.monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))

    code, document = site.report()

    assert code == 0
    assert "subject repo:x" in find(document, "aws", "credential form")["detail"]
    assert find(document, "aws", "image")["status"] == "not checked"


def test_gcp_credentials_that_are_not_json(site: Site) -> None:
    site.monkeypatch.setenv("GOOGLE_CREDENTIALS", "{not json")

    assert_failed(
        site,
        "gcp",
        "credential form",
        fix="export the service account key or workload identity config as JSON",
    )


def test_gcp_service_account_of_another_project_warns(site: Site) -> None:
    key = {
        "type": "service_account",
        "project_id": "ecoma-prod",
        "client_email": "burst@ecoma-prod.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\n...",
    }
    site.monkeypatch.setenv("GOOGLE_CREDENTIALS", json.dumps(key))

    code, document = site.report()

    found = find(document, "gcp", "credential form")
    assert (code, found["status"]) == (0, "warn")
    assert "the pool's is ecoma-staging" in found["detail"]
    assert "-----BEGIN PRIVATE KEY-----" not in site.out


# --------------------------------------------------------------------------- README


def test_readme_first_live_deployment_is_one_command_per_step_and_names_real_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import re

    from stacks import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## First live deployment$(?P<body>.*?)^## ", readme, re.M | re.S)
    assert section, "README.md has no First live deployment section"
    steps = re.findall(r"^\d+\. (.*)$", section.group("body"), re.M)
    assert len(steps) >= 8
    assert all("`" in step for step in steps), "every step shows its command"
    used = set(re.findall(r"ecoma-infra (\w+)", section.group("body")))
    assert {"doctor", "deploy", "configure", "validate"} <= used
    for command in sorted(used):
        with pytest.raises(SystemExit) as exited:
            cli.build_parser().parse_args([command, "--help"])
        assert exited.value.code == 0, command
    assert "docs/first-deployment.md" in section.group("body")
    assert (ROOT / "docs" / "first-deployment.md").is_file()

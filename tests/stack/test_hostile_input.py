"""Hostile and careless stack files: each ends in a message naming the file, the field and the fix
(exit 1), never a traceback, never a silent acceptance, never the secret it holds.

Two tables: whole files (YAML, encoding, namespaces, secrets) run through `ecoma-infra validate`,
and values the clouds would refuse, each with a close value that is accepted, so that a rule
which refused everything would fail here too.
"""

from __future__ import annotations

import ast
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from stacks import ROOT

from ecoma_infra.cli.main import main
from ecoma_infra.stack import document
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import load_stack_file, parse_stack_config
from ecoma_infra.stack.model import json_schema, split_namespace
from ecoma_infra.stack.secret_shapes import PROVIDER_SECRET_KEYS

STAGING = (ROOT / "Pulumi.staging.yaml").read_text()
K3S_TOKEN = "K10" + "ab12" * 16 + "::server:d41d8cd98f00b204e9800998ecf8427e"
PVE_TOKEN = "ci@pve!ci-2025=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
SECRETS = (K3S_TOKEN, PVE_TOKEN, "tskey-" + "auth-kAbCdEf1CNTRL-0123456789", "AKIAIOSFODNN7EXAMPLE")


def with_config(extra: str) -> str:
    """The staging file with `extra` lines added under `config:`."""
    return STAGING.replace("config:\n", "config:\n" + extra, 1)


def bomb(levels: int = 9) -> str:
    lines = ["  aws:notes:", "    l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"    l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


# (id, file text, where, words in the message)
FILES: list[tuple[str, str | bytes, str, str]] = [
    (
        "not-utf8",
        STAGING.encode().replace(b"ops@ecoma", b"ops@\xe9coma"),
        "line ",
        "not UTF-8 text",
    ),
    (
        "duplicate-top-level-key",
        STAGING + "  ecoma:nodes:\n    - {name: cpl-9}\n",
        "YAML (line ",
        "the key `ecoma:nodes` is given twice",
    ),
    (
        "duplicate-nested-key",
        STAGING.replace("    user: ecoma\n", "    user: ecoma\n    user: root\n"),
        "YAML (line ",
        "the key `user` is given twice",
    ),
    ("alias-bomb-in-another-namespace", with_config(bomb()), "YAML (line ", "alias bomb"),
    (
        "alias-inside-itself",
        with_config("  aws:notes: &loop [a, *loop]\n"),
        "YAML (line ",
        "an alias refers to a node that contains it",
    ),
    ("integer-too-long", with_config("  pulumi:x: " + "9" * 5000 + "\n"), "YAML", "4300"),
    ("impossible-date", with_config("  pulumi:when: 2025-13-45\n"), "YAML", "month"),
    ("nested-too-deep", with_config("  pulumi:x: " + "[" * 3000 + "\n"), "YAML", "deeply"),
    ("not-a-mapping", "- just\n- a list\n", "file", "not a mapping"),
    ("unknown-top-level-key", STAGING + "secretsproviders: x\n", "`secretsproviders`", "unknown"),
    (
        "namespace-typo",
        STAGING.replace("ecoma:k3s:", "ecmoa:k3s:"),
        "`ecmoa:k3s`",
        "unknown namespace `ecmoa`",
    ),
    (
        "bare-key-without-namespace",
        with_config("  storage:\n    filesystems: {hot: xfs}\n"),
        "`storage`",
        "without a namespace",
    ),
    (
        "plain-proxmox-api-token",
        with_config(f"  proxmoxve:apiToken: {PVE_TOKEN}\n"),
        "proxmoxve:apiToken",
        "a secret is stored in plain text",
    ),
    (
        "plain-aws-secret-key",
        with_config("  aws:secretKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"),
        "aws:secretKey",
        "a secret is stored in plain text",
    ),
    (
        "plain-password-inside-a-provider-object",
        with_config("  proxmoxve:ssh:\n    username: root\n    password: hunter2hunter2\n"),
        "proxmoxve:ssh.password",
        "a credential in plain text",
    ),
    (
        "token-shaped-value-under-pulumi",
        with_config(f"  pulumi:tags:\n    owner: {K3S_TOKEN}\n"),
        "pulumi:tags.owner",
        "looks like a k3s token",
    ),
    (
        "tailscale-key-in-a-provider-value",
        with_config("  tailscale:tailnet: " + "tskey-" + "auth-kAbCdEf1CNTRL-0123456789\n"),
        "tailscale:tailnet",
        "looks like a Tailscale key",
    ),
    (
        "empty-secure-value",
        with_config('  ecoma:k3s_token:\n    secure: ""\n'),
        "ecoma:k3s_token",
        "an empty `secure:` value",
    ),
    (
        "token-in-k3s-server-args",
        STAGING.replace(
            "    version: v1.32.5+k3s1",
            f"    version: v1.32.5+k3s1\n    server_args: [--token={K3S_TOKEN}]",
        ),
        "ecoma:k3s.server_args[0]",
        "`--token` carries a secret",
    ),
    (
        "control-character-in-a-value",
        STAGING.replace("instance_type: t3.large", 'instance_type: "t3.large\\nruncmd: [id]"'),
        "ecoma:burst.aws.instance_type",
        "control characters",
    ),
]


class PurePythonStrictLoader(document.UniqueKeys, yaml.SafeLoader):
    """What `document.StrictLoader` is on a PyYAML built without libyaml."""


@pytest.fixture(params=["libyaml", "pure-python"])
def strict_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both parsers a stack file may be read with: libyaml's (used wherever PyYAML has it) and
    PyYAML's own; each must refuse the same files with the same message."""
    if request.param == "libyaml":
        assert hasattr(yaml, "CSafeLoader"), "this PyYAML has no libyaml: the fast path is off"
        assert issubclass(document.StrictLoader, yaml.CSafeLoader)
    else:
        monkeypatch.setattr(document, "StrictLoader", PurePythonStrictLoader)
    return str(request.param)


@pytest.mark.usefixtures("strict_loader")
@pytest.mark.parametrize(
    ("text", "where", "words"), [pytest.param(*case[1:], id=case[0]) for case in FILES]
)
def test_hostile_file_is_refused_naming_file_field_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, where: str, words: str
) -> None:
    path = tmp_path / "Pulumi.staging.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    assert main(["validate", "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if f"{path}: {where}" in line and words in line]
    assert lines, err
    assert all("Fix: " in line for line in err.splitlines() if line.startswith("  - "))
    for secret in SECRETS:
        assert secret not in err


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_both_parsers_read_a_stack_file_to_the_same_document(stack: str) -> None:
    text = (ROOT / f"Pulumi.{stack}.yaml").read_text()
    fast = document.parse_yaml(text, stack)
    slow = yaml.load(text, Loader=PurePythonStrictLoader)  # noqa: S506 - a safe loader
    assert fast == slow
    assert fast["config"]["ecoma:nodes"]


def test_a_control_character_is_placed_on_its_line_by_both_parsers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Non-ASCII text before it: libyaml counts bytes, PyYAML characters; both name line 3.
    text = "# é é é é\nconfig:\n  x: a\x07b\n"
    messages = []
    for loader in (document.StrictLoader, PurePythonStrictLoader):
        monkeypatch.setattr(document, "StrictLoader", loader)
        with pytest.raises(ConfigError) as raised:
            document.parse_yaml(text, "Pulumi.x.yaml")
        messages.append([(i.where, i.message) for i in raised.value.issues])
    assert (
        messages[0]
        == messages[1]
        == [("YAML (line 3)", "the character U+0007 is not allowed in YAML")]
    )


def test_the_untouched_example_file_passes_where_the_hostile_ones_fail(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(with_config("  aws:region: eu-central-1\n  pulumi:tags: {team: infra}\n"))
    assert main(["validate", "--file", str(path)]) == 0


def test_merge_keys_may_override_what_they_merge(tmp_path: Path) -> None:
    """YAML merge keys are not duplicates: their values are meant to be overridden."""
    text = STAGING.replace(
        "  ecoma:k3s:\n    version: v1.32.5+k3s1",
        "  pulumi:defaults: &defaults {version: v1.31.0+k3s1}\n"
        "  ecoma:k3s:\n    <<: *defaults\n    version: v1.32.5+k3s1",
    )
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(text)
    assert load_stack_file(path).config.k3s.version == "v1.32.5+k3s1"


def test_a_file_too_large_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(STAGING + "#" * document.MAX_FILE_BYTES)
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_stack_file(path)


def test_an_alias_bomb_is_measured_not_expanded(tmp_path: Path) -> None:
    """Nine levels of ten aliases would be 10^9 values; the check reads ~100 nodes."""
    text = "config:\n" + bomb(9)
    with pytest.raises(ConfigError, match="expands to more than"):
        document.parse_yaml(text, "Pulumi.x.yaml")
    # Just under the bound is read, and is the same data a plain loader gives.
    fine = "config:\n" + bomb(4)
    assert document.parse_yaml(fine, "Pulumi.x.yaml") == yaml.safe_load(fine)


def test_the_provider_secret_table_matches_the_installed_sdks() -> None:
    """Every config key a provider's schema marks secret (its `Provider` wraps it in
    `pulumi.Output.secret`) is in PROVIDER_SECRET_KEYS, plus gcp:credentials."""
    site = Path(yaml.__file__).resolve().parents[1]
    for namespace, keys in PROVIDER_SECRET_KEYS.items():
        source = (site / f"pulumi_{namespace}" / "provider.py").read_text()
        marked = set()
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.IfExp)
                and "Output.secret" in ast.unparse(node.value.orelse)
            ):
                target = node.targets[0]
                assert isinstance(target, ast.Subscript)
                snake = ast.literal_eval(target.slice)
                marked.add(snake.split("_")[0] + "".join(p.title() for p in snake.split("_")[1:]))
        expected = marked | ({"credentials"} if namespace == "gcp" else set())
        assert keys == expected, namespace


# --------------------------------------------------------------------------- values

Change = Callable[[dict[str, Any]], None]


def at(path: str, value: Any) -> Change:
    """Set `a.b.c` (a node by name: `nodes.cpl-1.memory_mb`)."""

    def change(values: dict[str, Any]) -> None:
        target: Any = values
        *parents, last = path.split(".")
        for part in parents:
            if isinstance(target, list):
                target = next(item for item in target if item.get("name") == part)
            else:
                target = target.setdefault(part, {})
        target[last] = value

    return change


def both(*changes: Change) -> Change:
    def change(values: dict[str, Any]) -> None:
        for item in changes:
            item(values)

    return change


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQSj8Rs6EmUXK85sFN/cNGsgm5DmB88/QAHDbHtstUI ops@ecoma"
RSA_BLOB_NAMED_ED25519 = "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 ops@ecoma"

# (id, wrong value, where, words, a close value that is accepted)
VALUES: list[tuple[str, Change, str, str, Change]] = [
    (
        "huge-burst-max",
        at("burst.aws.max", 1_000_000_000),
        "ecoma:burst.aws.max",
        "less than or equal to 5000",
        at("burst.aws.max", 50),
    ),
    (
        "pools-above-the-cluster-size",
        both(at("burst.aws.max", 5000), at("burst.gcp.max", 10)),
        "ecoma:burst",
        "above Kubernetes' 5000 nodes per cluster",
        both(at("burst.aws.max", 4000), at("burst.gcp.max", 10)),
    ),
    (
        "overflowing-ttl",
        at("burst.aws.ttl", "99999999999d"),
        "ecoma:burst.aws.ttl",
        "is not valid",
        at("burst.aws.ttl", "1d"),
    ),
    (
        "ttl-beyond-a-burst",
        at("burst.aws.ttl", "31d"),
        "ecoma:burst.aws.ttl",
        "longer than the most allowed here, 30d",
        at("burst.aws.ttl", "30d"),
    ),
    (
        "nan-threshold",
        at("burst.autoscale.cpu.scale_down_below", float("nan")),
        "ecoma:burst.autoscale.cpu.scale_down_below",
        "finite number",
        at("burst.autoscale.cpu.scale_down_below", 0.1),
    ),
    (
        "infinite-price",
        at("burst.aws.hourly_price_usd", float("inf")),
        "ecoma:burst.aws.hourly_price_usd",
        "finite number",
        at("burst.aws.hourly_price_usd", 0.5),
    ),
    (
        "aws-vpc-slash-8",
        both(at("burst.aws.vpc_cidr", "10.0.0.0/8"), at("burst.aws.subnet_cidr", "10.60.1.0/24")),
        "ecoma:burst.aws.vpc_cidr",
        "AWS takes /16 to /28",
        at("burst.aws.vpc_cidr", "10.60.0.0/16"),
    ),
    (
        "aws-vpc-slash-32",
        both(at("burst.aws.vpc_cidr", "10.60.0.1/32"), at("burst.aws.subnet_cidr", "10.60.0.1/32")),
        "ecoma:burst.aws.vpc_cidr",
        "AWS takes /16 to /28",
        both(at("burst.aws.vpc_cidr", "10.60.0.0/24"), at("burst.aws.subnet_cidr", "10.60.0.0/28")),
    ),
    (
        "no-room-for-the-nat-subnet",
        both(
            at("burst.aws.public_ip", False),
            at("burst.aws.vpc_cidr", "10.60.0.0/24"),
            at("burst.aws.subnet_cidr", "10.60.0.0/24"),
        ),
        "ecoma:burst.aws.subnet_cidr",
        "no room in vpc_cidr",
        both(
            at("burst.aws.public_ip", False),
            at("burst.aws.vpc_cidr", "10.60.0.0/24"),
            at("burst.aws.subnet_cidr", "10.60.0.0/25"),
        ),
    ),
    (
        "oci-vcn-slash-31",
        both(at("burst.oci.vpc_cidr", "10.62.0.0/31"), at("burst.oci.subnet_cidr", "10.62.0.0/31")),
        "ecoma:burst.oci.vpc_cidr",
        "OCI takes /16 to /30",
        both(at("burst.oci.vpc_cidr", "10.62.0.0/30"), at("burst.oci.subnet_cidr", "10.62.0.0/30")),
    ),
    (
        "public-vpc-range",
        both(at("burst.gcp.vpc_cidr", "8.8.0.0/16"), at("burst.gcp.subnet_cidr", "8.8.1.0/24")),
        "ecoma:burst.gcp.subnet_cidr",
        "not a private range",
        both(
            at("burst.gcp.vpc_cidr", "172.16.0.0/16"), at("burst.gcp.subnet_cidr", "172.16.1.0/24")
        ),
    ),
    (
        "ten-year-tailscale-key",
        at("tailscale.key_expiry", "3650d"),
        "ecoma:tailscale.key_expiry",
        "longer than the most allowed here, 90d",
        at("tailscale.key_expiry", "90d"),
    ),
    (
        "absurd-memory",
        at("nodes.cpl-1.memory_mb", 10**15),
        "ecoma:nodes[cpl-1].memory_mb",
        "less than or equal to",
        at("nodes.cpl-1.memory_mb", 262144),
    ),
    (
        "count-true",
        at("burst.aws.count", True),
        "ecoma:burst.aws.count",
        "valid integer",
        at("burst.aws.count", 1),
    ),
    (
        "count-as-text",
        at("burst.aws.count", "1"),
        "ecoma:burst.aws.count",
        "valid integer",
        at("burst.aws.count", 0),
    ),
    (
        "public-ip-as-text",
        at("burst.aws.public_ip", "yes"),
        "ecoma:burst.aws.public_ip",
        "valid boolean",
        at("burst.aws.public_ip", True),
    ),
    (
        "empty-datastore",
        at("proxmox.datastores", {"swap": "local-lvm", "hot": "", "warm": "x1", "cold": "x2"}),
        "ecoma:proxmox.datastores.hot",
        "is not valid",
        at("proxmox.datastores", {"swap": "local-lvm", "hot": "nvme", "warm": "x1", "cold": "x2"}),
    ),
    (
        "blank-region",
        at("burst.oci.region", "   "),
        "ecoma:burst.oci.region",
        "is not valid",
        at("burst.oci.region", "eu-amsterdam-1"),
    ),
    (
        "aws-zone-of-another-region",
        at("burst.aws.zone", "us-east-1a"),
        "ecoma:burst.aws.zone",
        "not an availability zone of region eu-central-1",
        at("burst.aws.zone", "eu-central-1b"),
    ),
    (
        "gcp-zone-of-another-region",
        at("burst.gcp.zone", "us-central1-a"),
        "ecoma:burst.gcp.zone",
        "not a zone of region europe-west3",
        at("burst.gcp.zone", "europe-west3-c"),
    ),
    (
        "lease-ending-before-it-starts",
        both(
            at("burst.aws.count", 1),
            at("burst.aws.launched_at", {"wkr-aws-1": "2025-06-02T12:00:00Z"}),
            at("burst.aws.expires_at", {"wkr-aws-1": "2025-06-02T10:00:00Z"}),
        ),
        "ecoma:burst.aws.expires_at.wkr-aws-1",
        "ends (2025-06-02T10:00:00Z) before it starts",
        both(
            at("burst.aws.count", 1),
            at("burst.aws.launched_at", {"wkr-aws-1": "2025-06-02T12:00:00Z"}),
            at("burst.aws.expires_at", {"wkr-aws-1": "2025-06-02T14:00:00Z"}),
        ),
    ),
    (
        "launched-in-the-future",
        both(
            at("burst.aws.count", 1),
            at("burst.aws.launched_at", {"wkr-aws-1": "2999-01-01T00:00:00Z"}),
        ),
        "ecoma:burst.aws.launched_at.wkr-aws-1",
        "is in the future",
        both(
            at("burst.aws.count", 1),
            at("burst.aws.launched_at", {"wkr-aws-1": "2025-01-01T00:00:00Z"}),
        ),
    ),
    (
        "rotated-in-2999",
        at("credentials", {"k3s_token": {"rotated_at": "2999-01-01T00:00:00Z"}}),
        "ecoma:credentials.k3s_token.rotated_at",
        "is in the future",
        at("credentials", {"k3s_token": {"rotated_at": "2025-01-01T00:00:00Z"}}),
    ),
    (
        "search-domain-with-a-newline",
        at("network.search_domain", "ecoma.internal\nruncmd: [reboot]"),
        "ecoma:network.search_domain",
        "control characters",
        at("network.search_domain", "corp.ecoma.io"),
    ),
    (
        "search-domain-not-a-dns-name",
        at("network.search_domain", "ecoma_internal"),
        "ecoma:network.search_domain",
        "is not valid",
        at("network.search_domain", "ecoma-internal"),
    ),
    (
        "ssh-key-smuggling-a-second-key",
        at("ssh.authorized_keys", [KEY + "\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE evil@x"]),
        "ecoma:ssh.authorized_keys[0]",
        "control characters",
        at("ssh.authorized_keys", [KEY, KEY.replace("ops@ecoma", "ci@ecoma")]),
    ),
    (
        "ssh-key-of-another-type",
        at("ssh.authorized_keys", [RSA_BLOB_NAMED_ED25519]),
        "ecoma:ssh.authorized_keys[0]",
        "not a ssh-ed25519 key",
        at("ssh.authorized_keys", [KEY]),
    ),
    (
        "k3s-token-flag-and-value-apart",
        at("k3s.server_args", ["--token", "hunter2hunter2"]),
        "ecoma:k3s.server_args[1]",
        "the value of `--token` in plain text",
        at("k3s.server_args", ["--token-file", "/etc/rancher/k3s/token"]),
    ),
    (
        "agent-token-in-agent-args",
        at("k3s.agent_args", ["--agent-token=abc"]),
        "ecoma:k3s.agent_args[0]",
        "`--agent-token` carries a secret",
        at("k3s.agent_args", ["--node-label=team=infra"]),
    ),
    (
        "datastore-url-with-a-password",
        at("k3s.server_args", ["--datastore-endpoint=postgres://k3s:hunter2@db:5432/k3s"]),
        "ecoma:k3s.server_args[0]",
        "looks like a password in a URL",
        at("k3s.server_args", ["--datastore-endpoint=postgres://db:5432/k3s"]),
    ),
    (
        "host-gw-over-the-overlay",
        at("k3s.flannel_backend", "host-gw"),
        "ecoma:k3s.flannel_backend",
        "cannot carry",
        at("k3s.flannel_backend", "wireguard-native"),
    ),
    (
        "role-arn-that-is-no-arn",
        at("burst.aws.role_arn", "ecoma-burst"),
        "ecoma:burst.aws.role_arn",
        "is not valid",
        at("burst.aws.role_arn", "arn:aws:iam::123456789012:role/ci/ecoma-burst"),
    ),
    (
        "secret-in-a-pattern-field-is-not-echoed",
        at("ssh.user", K3S_TOKEN),
        "ecoma:ssh.user",
        "looks like a k3s token",
        at("ssh.user", "debian"),
    ),
]


def staging_values() -> dict[str, Any]:
    values, _ = split_namespace(yaml.safe_load(STAGING)["config"])
    return values


@pytest.mark.parametrize(
    ("wrong", "where", "words", "right"), [pytest.param(*case[1:], id=case[0]) for case in VALUES]
)
def test_a_value_the_cloud_would_refuse_is_refused_and_its_fix_accepted(
    wrong: Change, where: str, words: str, right: Change
) -> None:
    values = staging_values()
    wrong(values)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(values, "Pulumi.staging.yaml")
    text = str(caught.value)
    found = [i for i in caught.value.issues if i.where == where and words in i.message]
    assert found, text
    assert all(issue.fix for issue in caught.value.issues)
    for secret in SECRETS:
        assert secret not in text
    fixed = staging_values()
    right(fixed)
    parse_stack_config(copy.deepcopy(fixed), "Pulumi.staging.yaml")


def test_there_are_cases_for_every_class_the_issue_lists() -> None:
    assert len(FILES) + len(VALUES) >= 50


@pytest.mark.parametrize(
    "extra",
    [{"ecmoa:k3s": {}}, {"storage": {}}, {"random:thing": 1}],
    ids=["namespace-typo", "bare-key", "unknown-namespace"],
)
def test_the_editor_schema_refuses_the_namespaces_validate_refuses(extra: dict[str, Any]) -> None:
    document = json.loads(json.dumps(yaml.safe_load(STAGING), default=str))
    schema = json_schema()
    jsonschema.validate(document, schema)
    document["config"].update(extra)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)
    document["config"] = {k: v for k, v in document["config"].items() if k not in extra}
    document["secretsproviders"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)

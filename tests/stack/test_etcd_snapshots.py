"""The stack model: etcd snapshot settings, `ecoma:proxmox.replacing`, the secrets they bring."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import parse_stack_config
from ecoma_infra.stack.model import SECRET_KEYS, required_secrets, split_namespace

ROOT = Path(__file__).resolve().parents[2]
S3 = {"endpoint": "minio.ecoma.internal:9000", "bucket": "ecoma-etcd", "folder": "prod/etcd"}


def values(**k3s: Any) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    found, _ = split_namespace(document["config"])
    found = copy.deepcopy(found)
    found["k3s"].update(k3s)
    return found


def test_defaults_are_k3s_own_and_keep_snapshots_on_the_servers() -> None:
    config = parse_stack_config(values(), "Pulumi.prod.yaml")
    snapshots = config.k3s.etcd_snapshots
    assert (snapshots.schedule_cron, snapshots.retention, snapshots.compress) == (
        "0 */12 * * *",
        5,
        False,
    )
    assert snapshots.s3 is None
    assert "etcd_s3_access_key_id" not in required_secrets(config)


def test_an_s3_target_needs_its_two_secrets() -> None:
    settings = {"schedule_cron": "0 */6 * * *", "retention": 28, "s3": S3}
    config = parse_stack_config(values(etcd_snapshots=settings), "Pulumi.prod.yaml")
    target = config.k3s.etcd_snapshots.s3
    assert target is not None
    assert (target.endpoint, target.bucket, target.folder, target.region) == (
        "minio.ecoma.internal:9000",
        "ecoma-etcd",
        "prod/etcd",
        "us-east-1",
    )
    needed = required_secrets(config)
    assert needed[-2:] == ["etcd_s3_access_key_id", "etcd_s3_secret_access_key"]
    assert set(needed[-2:]) <= set(SECRET_KEYS)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"schedule_cron": "every day"}, "ecoma:k3s.etcd_snapshots.schedule_cron"),
        ({"schedule_cron": "0 */6 * *"}, "ecoma:k3s.etcd_snapshots.schedule_cron"),
        ({"retention": 0}, "ecoma:k3s.etcd_snapshots.retention"),
        (
            {"s3": {**S3, "endpoint": "https://s3.example.com"}},
            "ecoma:k3s.etcd_snapshots.s3.endpoint",
        ),
        ({"s3": {**S3, "bucket": "Ecoma_Etcd"}}, "ecoma:k3s.etcd_snapshots.s3.bucket"),
        ({"s3": {"endpoint": "s3.amazonaws.com"}}, "ecoma:k3s.etcd_snapshots.s3.bucket"),
        ({"s3": {**S3, "access_key": "AKIA..."}}, "ecoma:k3s.etcd_snapshots.s3.access_key"),
    ],
)
def test_bad_snapshot_settings_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(values(etcd_snapshots=settings), "Pulumi.prod.yaml")
    assert field in str(error.value)
    assert "Pulumi.prod.yaml" in str(error.value)


@pytest.mark.parametrize("cron", ["0 */6 * * *", "30 2 * * MON-FRI", "@daily", "@every 6h"])
def test_robfig_cron_specs_are_accepted(cron: str) -> None:
    config = parse_stack_config(values(etcd_snapshots={"schedule_cron": cron}), "x")
    assert config.k3s.etcd_snapshots.schedule_cron == cron


def test_replacing_names_only_nodes() -> None:
    found = values()
    found["proxmox"]["replacing"] = ["sts-9"]
    with pytest.raises(ConfigError, match=r"ecoma:proxmox\.replacing.*'sts-9' is not a node"):
        parse_stack_config(found, "Pulumi.prod.yaml")
    found["proxmox"]["replacing"] = ["sts-1"]
    assert parse_stack_config(found, "x").proxmox.replacing == ["sts-1"]

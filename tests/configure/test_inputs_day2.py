"""The S3 credentials of the etcd snapshots reach the playbook like the other secrets: from the
stack's secret outputs or the caller's environment, and only when the stack has them."""

from __future__ import annotations

from ecoma_infra.configure.inputs import (
    OPTIONAL_SECRET_ENV_VARS,
    SECRET_ENV_VARS,
    secrets_from_environment,
    secrets_from_outputs,
)


def test_the_s3_outputs_become_their_variables() -> None:
    outputs = {
        "k3s_token": "K10abc::server:x",
        "etcd_s3_access_key_id": "AKIAEXAMPLE",
        "etcd_s3_secret_access_key": "s3cr3t/key",
    }
    assert secrets_from_outputs(outputs) == {
        "ECOMA_K3S_TOKEN": "K10abc::server:x",
        "ECOMA_ETCD_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "ECOMA_ETCD_S3_SECRET_ACCESS_KEY": "s3cr3t/key",
    }


def test_the_environment_may_hold_them_and_they_are_optional() -> None:
    environ = {"ECOMA_ETCD_S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "HOME": "/root"}
    assert secrets_from_environment(environ) == {"ECOMA_ETCD_S3_ACCESS_KEY_ID": "AKIAEXAMPLE"}
    # configure's "not set" note lists only the secrets every stack has.
    assert not set(OPTIONAL_SECRET_ENV_VARS) & set(SECRET_ENV_VARS)

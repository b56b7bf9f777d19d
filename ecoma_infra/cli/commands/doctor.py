"""`ecoma-infra doctor`: read-only checks of the live environment a stack assumes."""

from __future__ import annotations

import argparse
import json
import os

from ecoma_infra.cli import stack_options
from ecoma_infra.ops.doctor import render_report, run_doctor
from ecoma_infra.ops.doctor.clouds import (
    AWS_ACCESS_KEY_ENV,
    AWS_SECRET_KEY_ENV,
    AWS_TOKEN_FILE_ENV,
    GCP_CREDENTIALS_ENV,
    OCI_PRIVATE_KEY_ENV,
)
from ecoma_infra.platforms.proxmox import PROXMOX_TOKEN_ENV
from ecoma_infra.platforms.tailscale import API_KEY_ENV, OAUTH_CLIENT_SECRET_ENV

EPILOG = f"""\
Credentials come from the environment (the stack's secrets, e.g. `pulumi config get
ecoma:<key>`); a check whose credential is absent says "not checked" and why:
  {PROXMOX_TOKEN_ENV}            Proxmox (USER@REALM!TOKENID=SECRET); REQUESTS_CA_BUNDLE for a
                                  PVE certificate signed by your own CA
  {OAUTH_CLIENT_SECRET_ENV}  Tailscale, with ecoma:tailscale.oauth_client_id
  {API_KEY_ENV}               Tailscale, when the stack uses an API access token
  {AWS_TOKEN_FILE_ENV}     AWS pool with role_arn: a file with the OIDC token
  {AWS_ACCESS_KEY_ENV}, {AWS_SECRET_KEY_ENV}   AWS pool without role_arn
  {GCP_CREDENTIALS_ENV}              GCP pool: the credentials JSON
  {OCI_PRIVATE_KEY_ENV}                OCI pool: the API signing key (PEM)
Nothing is changed anywhere. Exit codes: 0 no check failed (--strict: also none warned or went
unchecked), 1 a check failed, 2 bad usage.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the live environment a stack assumes (read-only; exit 1 on a failed check)",
        description=(
            "Before the first `up` (and any time after): does the Proxmox API answer, with the\n"
            "privileges the program needs; are the hypervisors online, the datastores there with\n"
            "the right content types, template 9000 a template that boots from the stack's\n"
            "interface, the SDN zone of the right type, the VM ids free or this stack's; does the\n"
            "Tailscale OAuth client have its scopes, would `up` erase another stack's policy or\n"
            "collide with its routes; are the burst pools' credentials well formed; do the\n"
            "resolvers answer. Each check: ok, warn, fail or not checked, with the fix."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stack_options.add_stack_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also exit 1 when a check warned or was not checked (for CI before the first up)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = stack_options.load(args)
    report = run_doctor(
        stack_options.stack_name(args), loaded.config, os.environ, source=loaded.source
    )
    if args.json:
        print(json.dumps(report.to_json(strict=args.strict), indent=2))
    else:
        print(render_report(report, strict=args.strict))
    return 0 if report.passed(strict=args.strict) else 1

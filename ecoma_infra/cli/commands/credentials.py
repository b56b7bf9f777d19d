"""`ecoma-infra credentials check|rotate`: when the stack's credentials are due, and the scripted
rotation of the Proxmox API token."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from ecoma_infra.cli import conventions, stack_options
from ecoma_infra.cli.prompt import confirm
from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.ops.credentials import (
    K3S_RENEWAL_DAYS,
    README_SECTION,
    CredentialReport,
    EnvironmentMetadata,
    check_credentials,
    expiry_metrics,
    k3s_certificate_statuses,
    manual_rotation,
    plan_proxmox_rotation,
    render_report,
    rotate_proxmox_token,
    with_rows,
)
from ecoma_infra.ops.telemetry import render
from ecoma_infra.paths import project_root
from ecoma_infra.platforms.proxmox import PROXMOX_TOKEN_ENV, ProxmoxApi
from ecoma_infra.platforms.pulumi_automation import AutomationStack
from ecoma_infra.platforms.seams import StackBackend
from ecoma_infra.platforms.ssh_files import K3S_SERVER_CERTIFICATES, SshFiles
from ecoma_infra.stack.load import parse_stack_config
from ecoma_infra.stack.model import SECRET_KEYS, split_namespace

EPILOG_CHECK = f"""\
Provider metadata is read only when the environment holds a credential to ask with:
  TAILSCALE_API_KEY or TAILSCALE_OAUTH_CLIENT_SECRET   Tailscale key expiry
  {PROXMOX_TOKEN_ENV}                                 Proxmox token expiry
Otherwise the rotation record (ecoma:credentials.<key>) decides, and the report says so.
--k3s-certificates adds a row per k3s server: its certificates under
/var/lib/rancher/k3s/server/tls, read over SSH (`ssh <ssh user>@<node ip> sudo -n`; certificates
only, never keys), due when the first one expires. k3s renews them when it starts within
{K3S_RENEWAL_DAYS} days of expiry.
--metrics-file writes the due dates as gauges (ecoma_credential_expiry_timestamp_seconds,
ecoma_k3s_certificate_expiry_timestamp_seconds) to a node_exporter textfile.
Exit codes: 0 nothing due within N days, 1 something expiring, expired or unknown, 2 bad usage.
"""

EPILOG_ROTATE = f"""\
Only proxmox_api_token is scripted. It authenticates with {PROXMOX_TOKEN_ENV} (a token that may
manage the old token's user and its ACLs), creates a privilege-separated token ci-YYYYMMDD with the
old token's ACLs and an expiry of now + max_age, checks that it works, stores it in the stack and
updates the rotation record, and only then deletes the old token. Other credentials: see
{README_SECTION}.
"""


def now() -> datetime:
    """The current time (a seam for tests)."""
    return datetime.now(UTC)


def open_stack(name: str) -> StackBackend:
    """The real stack through the Pulumi Automation API (a seam for tests)."""
    return AutomationStack(name, project_root())


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "credentials",
        help="check when the stack's credentials are due; rotate the Proxmox API token",
        description="Expiry checks and rotation of the credentials a stack's CI uses.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = actions.add_parser(
        "check",
        help="report every credential's due date (exit 1 when one is due within N days)",
        description=(
            "For every secret the stack needs: its kind, the due date (the earlier of the\n"
            "provider's expiry and rotated_at + max_age of ecoma:credentials.<key>), where the\n"
            "date comes from, days left, status (ok, expiring, expired, unknown) and how to\n"
            "rotate it. Sorted by days left."
        ),
        epilog=EPILOG_CHECK,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stack_options.add_stack_options(check)
    check.add_argument(
        "--within-days",
        metavar="N",
        type=int,
        required=True,
        help="a credential due within N days is 'expiring'",
    )
    conventions.add_json_option(check, "the report as one JSON document")
    check.add_argument(
        "--k3s-certificates",
        action="store_true",
        help="also check the k3s servers' certificates, read over SSH",
    )
    check.add_argument(
        "--ssh-config",
        metavar="FILE",
        type=Path,
        help="ssh config for --k3s-certificates (key, user, known hosts; default: ssh's own)",
    )
    check.add_argument(
        "--metrics-file",
        metavar="FILE",
        type=Path,
        help="write the due dates as gauges to this node_exporter textfile",
    )
    check.set_defaults(handler=run_check)

    rotate = actions.add_parser(
        "rotate",
        help="rotate a credential (scripted for proxmox_api_token)",
        description="Rotate one credential of a stack, changing the stack's config through\n"
        "the Pulumi Automation API (needs the Pulumi CLI and the stack's backend).",
        epilog=EPILOG_ROTATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stack_options.add_stack_option(
        rotate, help_text="the Pulumi stack whose config is read and changed (Automation API)"
    )
    rotate.add_argument(
        "--credential",
        required=True,
        choices=sorted(SECRET_KEYS),
        metavar="KEY",
        help=f"the secret key to rotate ({', '.join(sorted(SECRET_KEYS))})",
    )
    conventions.add_yes_option(rotate, "do not ask before changing anything")
    rotate.set_defaults(handler=run_rotate)


def open_ssh_files(user: str, ssh_config: Path | None) -> SshFiles:
    """Files of the stack's machines over SSH (a seam for tests)."""
    return SshFiles(user, ssh_config=ssh_config)


def build_report(args: argparse.Namespace) -> CredentialReport:
    """The check's report for the parsed arguments (also what metrics are made from)."""
    if args.within_days < 0:
        raise UsageError(f"--within-days {args.within_days}: give 0 or more days")
    if getattr(args, "ssh_config", None) and not args.ssh_config.is_file():
        raise UsageError(f"--ssh-config {args.ssh_config}: no such file")
    loaded = stack_options.load(args)
    moment = now()
    stack = stack_options.stack_name(args)
    report = check_credentials(
        stack,
        loaded.config,
        now=moment,
        within_days=args.within_days,
        metadata=EnvironmentMetadata(loaded.config, os.environ),
        source=loaded.source,
    )
    if not getattr(args, "k3s_certificates", False):
        return report
    files = open_ssh_files(loaded.config.ssh.user, args.ssh_config)
    servers: dict[str, Mapping[str, bytes] | EcomaError] = {}
    for server in loaded.config.nodes_with_role("cpl"):
        try:
            servers[server.name] = files.read(str(server.ip), K3S_SERVER_CERTIFICATES)
        except EcomaError as error:
            servers[server.name] = error
    rows = k3s_certificate_statuses(servers, stack=stack, now=moment, within_days=args.within_days)
    return with_rows(report, rows)


def write_metrics(path: Path, report: CredentialReport) -> None:
    """The report's gauges as a node_exporter textfile, written whole (rename into place)."""
    samples = {
        (name, tuple(sorted(labels.items()))): value
        for name, labels, value in expiry_metrics(report)
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(render(samples), encoding="utf-8")
        partial.replace(path)
    except OSError as error:
        raise EcomaError(f"--metrics-file {path}: cannot write it: {error.strerror}") from None


def run_check(args: argparse.Namespace) -> int:
    report = build_report(args)
    if args.metrics_file is not None:
        write_metrics(args.metrics_file, report)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render_report(report))
    return 0 if report.ok else 1


def run_rotate(args: argparse.Namespace) -> int:
    stack_name: str = args.stack
    if args.credential != "proxmox_api_token":
        raise EcomaError(manual_rotation(args.credential, stack_name))
    backend = open_stack(args.pulumi_stack or stack_name)
    values, _ = split_namespace(backend.config())
    config = parse_stack_config(values, f"stack {stack_name}")
    api = ProxmoxApi.from_environment(config.proxmox, os.environ)
    moment = now()
    plan = plan_proxmox_rotation(stack_name, config, api, now=moment)
    for line in plan.describe():
        print(line)
    confirm(
        f"rotate {args.credential} of stack {stack_name}",
        yes=conventions.skip_confirmations(args),
        out=sys.stdout,
    )
    rotate_proxmox_token(backend, plan, api, now=moment, say=print)
    print(
        f"done: the next `ecoma-infra deploy --stack {stack_name}` uses {plan.new}; where CI "
        f"exports {PROXMOX_TOKEN_ENV} from its own secret store, update it there too"
    )
    return 0

"""The Tailscale checks of `doctor`, read-only through the Tailscale API v2: the credential and
its scopes, the tags and who owns them, the policy `up` would write (validated by Tailscale
without applying it) and what it would erase, and routes of other devices that collide with the
ones this stack advertises or accepts.

`up` writes the whole tailnet policy (`overwrite_existing_content`), so anything in the live
policy that the stack's own policy does not hold is lost at the next `up`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from ipaddress import IPv4Network, ip_network
from typing import Any

from ecoma_infra.errors import EcomaError
from ecoma_infra.ops.doctor.report import Check, fail, not_checked, ok, warn
from ecoma_infra.platforms.tailscale import (
    API_KEY_ENV,
    OAUTH_CLIENT_SECRET_ENV,
    TailscaleApi,
    TailscaleApiError,
)
from ecoma_infra.program.components.tailscale import OAUTH_SCOPES
from ecoma_infra.program.tailnet_policy import CI_TAG, tailnet_policy
from ecoma_infra.stack.model import NAMESPACE, StackConfig
from ecoma_infra.stack.names import burst_node_index

AREA = "tailscale"
ApiFactory = Callable[[StackConfig, Mapping[str, str]], TailscaleApi]
DEFAULT_ROUTES = frozenset({"0.0.0.0/0", "::/0"})  # an exit node's, not a subnet
# The rule of a new tailnet's default policy: everyone reaches everything.
DEFAULT_ACLS = [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]


def from_environment(config: StackConfig, environ: Mapping[str, str]) -> TailscaleApi:
    return TailscaleApi.from_environment(config.tailscale, environ, timeout=15.0)


def tailscale_checks(
    config: StackConfig,
    environ: Mapping[str, str],
    *,
    api_factory: ApiFactory = from_environment,
) -> list[Check]:
    later = ("tags", "policy valid", "policy overwrite", "routes")
    settings = config.tailscale
    has_secret = bool(environ.get(OAUTH_CLIENT_SECRET_ENV))
    has_key = bool(environ.get(API_KEY_ENV))
    checks: list[Check] = []
    if settings.oauth_client_id and not has_secret:
        checks.append(
            not_checked(
                AREA,
                "credential",
                f"the stack uses the OAuth client {settings.oauth_client_id} and "
                f"{OAUTH_CLIENT_SECRET_ENV} is not set",
                f"export {OAUTH_CLIENT_SECRET_ENV} (the stack's {NAMESPACE}:"
                "tailscale_oauth_client_secret)",
            )
        )
        checks.append(not_checked(AREA, "scopes", f"{OAUTH_CLIENT_SECRET_ENV} is not set"))
        if not has_key:
            return checks + [
                not_checked(AREA, name, "no Tailscale credential in the environment")
                for name in later
            ]
    elif not settings.oauth_client_id and not has_key:
        return [
            not_checked(
                AREA,
                "credential",
                f"the stack uses an API access token and {API_KEY_ENV} is not set",
                f"export {API_KEY_ENV} (the stack's {NAMESPACE}:tailscale_api_key)",
            ),
            *(not_checked(AREA, name, f"{API_KEY_ENV} is not set") for name in later),
        ]
    try:
        api = api_factory(config, environ)
    except EcomaError as error:
        return [
            fail(AREA, "credential", str(error), "see the message"),
            *(not_checked(AREA, name, "no usable Tailscale credential") for name in later),
        ]
    if not checks:  # the credential the stack uses is the one in hand
        try:
            api.authenticate()
        except TailscaleApiError as error:
            return [
                fail(AREA, "credential", str(error), _credential_fix(config)),
                *(not_checked(AREA, name, "the credential was refused") for name in later),
            ]
        checks.append(ok(AREA, "credential", _credential_seen(config, api)))
        checks.append(_scopes(config, api))
    else:
        checks.append(
            warn(
                AREA,
                "read with",
                f"the checks below read the tailnet with {API_KEY_ENV}, not the stack's OAuth "
                "client",
            )
        )
    checks += _policy_checks(config, api)
    checks.append(_routes(config, api))
    return checks


def _credential_seen(config: StackConfig, api: TailscaleApi) -> str:
    if api.uses_oauth:
        return (
            f"the OAuth client {config.tailscale.oauth_client_id} gets an access token for "
            f"{config.tailscale.tailnet}"
        )
    return f"the API access token works on {config.tailscale.tailnet}"


def _credential_fix(config: StackConfig) -> str:
    if config.tailscale.oauth_client_id:
        return (
            f"check {NAMESPACE}:tailscale.oauth_client_id and that {OAUTH_CLIENT_SECRET_ENV} is "
            "its current secret (admin console, Settings > OAuth clients)"
        )
    return f"export a valid, unexpired API access token in {API_KEY_ENV}"


def _scopes(config: StackConfig, api: TailscaleApi) -> Check:
    if not api.uses_oauth:
        return ok(AREA, "scopes", "an API access token acts with all of its user's rights")
    granted = api.granted_scopes
    if granted is None:
        return warn(
            AREA,
            "scopes",
            "Tailscale did not list the scopes it granted; the reads below show what works",
        )
    if "all" in granted:
        return ok(AREA, "scopes", "granted: all")
    # The provider asks for exactly these scopes when it exchanges the client's credentials
    # (`make_provider`), and Tailscale grants no scope the client lacks.
    missing = [scope for scope in OAUTH_SCOPES if scope not in granted]
    shown = ", ".join(sorted(granted)) or "none"
    if not missing:
        return ok(AREA, "scopes", f"granted: {shown}")
    fix = (
        f"make an OAuth client with the scopes {', '.join(OAUTH_SCOPES)} (write) and the tag "
        f"{CI_TAG}, then set {NAMESPACE}:tailscale.oauth_client_id and "
        f"{NAMESPACE}:tailscale_oauth_client_secret"
    )
    return fail(
        AREA,
        "scopes",
        f"the OAuth client lacks {', '.join(missing)} (granted: {shown}); `up` mints keys, "
        "approves routes and writes the policy",
        fix,
    )


def _policy_checks(config: StackConfig, api: TailscaleApi) -> list[Check]:
    ours = tailnet_policy(config, admins=config.tailscale.admins)
    try:
        live = api.policy()
    except TailscaleApiError as error:
        why = f"reading the tailnet policy failed: {error}"
        fix = "give the OAuth client the policy_file scope"
        return [
            fail(AREA, "tags", why, fix),
            fail(AREA, "policy valid", why, fix),
            not_checked(AREA, "policy overwrite", "the live policy could not be read"),
        ]
    checks = [_tags(config, live, ours)]
    try:
        verdict = api.validate_policy(ours)
    except TailscaleApiError as error:
        checks.append(
            fail(
                AREA,
                "policy valid",
                f"validating failed: {error}",
                "give the OAuth client the policy_file scope",
            )
        )
    else:
        if verdict:
            checks.append(
                fail(
                    AREA,
                    "policy valid",
                    f"Tailscale refuses the policy `up` would write: {verdict}",
                    f"correct the stack file: {NAMESPACE}:tailscale.admins must be users of the "
                    f"tailnet, {NAMESPACE}:tailscale.tags distinct tags; run `ecoma-infra "
                    "preview --offline` to see the policy",
                )
            )
        else:
            checks.append(
                ok(
                    AREA,
                    "policy valid",
                    f"Tailscale accepts the policy `up` writes; its {len(ours['tests'])} tests "
                    "pass",
                )
            )
    checks.append(_overwrite(config, live, ours))
    return checks


def _tags(config: StackConfig, live: Mapping[str, Any], ours: Mapping[str, Any]) -> Check:
    owners: Mapping[str, Any] = live.get("tagOwners") or {}
    if CI_TAG not in owners:
        return fail(
            AREA,
            "tags",
            f"the live policy does not define {CI_TAG}, the tag of the CI's OAuth client that "
            "owns every role tag",
            f'add "{CI_TAG}": ["autogroup:admin"] to tagOwners (admin console, Access controls), '
            f"and give the OAuth client the tag {CI_TAG}",
        )
    wanted: Mapping[str, list[str]] = ours["tagOwners"]
    later: list[str] = []
    changed: list[str] = []
    for tag in sorted(set(config.tailscale.tags.values())):
        present = owners.get(tag)
        if present is None:
            later.append(tag)
        elif sorted(present) != sorted(wanted[tag]):
            changed.append(f"{tag} (owned by {', '.join(present) or 'nobody'})")
    if changed:
        role_owners = ", ".join(wanted[next(iter(sorted(set(config.tailscale.tags.values()))))])
        return warn(
            AREA,
            "tags",
            f"`up` changes the owners of {'; '.join(changed)} to {role_owners}",
        )
    detail = f"{CI_TAG} is defined"
    if later:
        detail += f"; `up` defines {', '.join(later)}, owned by {CI_TAG}"
    return ok(AREA, "tags", detail)


def foreign_entries(live: Mapping[str, Any], ours: Mapping[str, Any]) -> dict[str, list[str]]:
    """What the live policy holds that the stack's policy does not: tags, hosts, groups and
    auto-approved routes, by section."""
    found: dict[str, list[str]] = {}
    for section in ("tagOwners", "hosts", "groups"):
        extra = sorted(set(live.get(section) or {}) - set(ours.get(section) or {}))
        if extra:
            found[section] = extra
    live_routes = (live.get("autoApprovers") or {}).get("routes") or {}
    our_routes = (ours.get("autoApprovers") or {}).get("routes") or {}
    extra_routes = sorted(set(live_routes) - set(our_routes))
    if extra_routes:
        found["autoApprovers.routes"] = extra_routes
    if (live.get("autoApprovers") or {}).get("exitNode"):
        found["autoApprovers.exitNode"] = ["(set)"]
    return found


# Sections `up` writes wholesale; anything else in the live policy is dropped by it.
_WRITTEN = frozenset({"tagOwners", "hosts", "groups", "acls", "autoApprovers", "tests"})


def _overwrite(config: StackConfig, live: Mapping[str, Any], ours: Mapping[str, Any]) -> Check:
    if _same(live, ours):
        return ok(AREA, "policy overwrite", "the live policy is already this stack's")
    foreign = foreign_entries(live, ours)
    if foreign:
        shown = "; ".join(f"{section}: {', '.join(items)}" for section, items in foreign.items())
        return fail(
            AREA,
            "policy overwrite",
            f"the live policy holds what `up` would erase (it writes the whole policy of "
            f"{config.tailscale.tailnet}): {shown}. Another stack or hand edits use this tailnet",
            f"give this stack a tailnet of its own ({NAMESPACE}:tailscale.tailnet), or move "
            "those entries out of it before the first `up`",
        )
    dropped = sorted(key for key, value in live.items() if key not in _WRITTEN and value)
    if live.get("acls") == DEFAULT_ACLS and set(dropped) <= {"ssh"}:
        return ok(
            AREA,
            "policy overwrite",
            "the live policy is Tailscale's default (allow all): `up` replaces it with the "
            "stack's" + (" and drops its Tailscale SSH rule" if dropped else ""),
        )
    detail = "`up` replaces the live policy's rules with the stack's"
    if dropped:
        detail += f" and drops its {', '.join(dropped)}"
    return warn(
        AREA,
        "policy overwrite",
        detail + " (nothing of another stack is in it)",
        "keep anything worth keeping in the stack's policy (program/tailnet_policy.py)",
    )


def _same(live: Mapping[str, Any], ours: Mapping[str, Any]) -> bool:
    keys = (set(live) | set(ours)) - {"ssh"}
    return all(_normal(live.get(key)) == _normal(ours.get(key)) for key in keys)


def _normal(value: Any) -> Any:
    if value in (None, [], {}):
        return None
    return value


def _routes(config: StackConfig, api: TailscaleApi) -> Check:
    try:
        devices = api.route_devices()
    except TailscaleApiError as error:
        return fail(
            AREA,
            "routes",
            f"listing devices failed: {error}",
            "give the OAuth client the devices:core and devices:routes scopes",
        )
    ours: dict[str, IPv4Network] = {"the SDN subnet": config.network.sdn_subnet}
    for provider, pool in config.burst.pools().items():
        ours[f"the {provider} pool's VPC"] = pool.vpc_cidr
    names = {node.name for node in config.nodes}
    pools = set(config.burst.pools())
    our_tags = set(config.tailscale.tags.values())
    collisions: list[str] = []
    for device in devices:
        hostname = str(device.get("hostname") or str(device.get("name", "")).split(".")[0])
        tags = set(device.get("tags") or [])
        ours_by_name = hostname in names or any(
            burst_node_index(provider, hostname) is not None for provider in pools
        )
        if ours_by_name and tags and tags <= our_tags:
            continue  # this stack's own node
        routes = {
            str(route)
            for key in ("advertisedRoutes", "AdvertisedRoutes", "enabledRoutes")
            for route in device.get(key) or []
        }
        for route in sorted(routes - DEFAULT_ROUTES):
            try:
                network = ip_network(route, strict=False)
            except ValueError:
                continue
            for what, mine in ours.items():
                if network.version == 4 and network.overlaps(mine):
                    collisions.append(f"{hostname} routes {route}, overlapping {what} {mine}")
    if collisions:
        return fail(
            AREA,
            "routes",
            "other devices route addresses of this stack: " + "; ".join(collisions) + " (two "
            "routers of one subnet are failover for each other; cloud nodes accept routes)",
            f"give this site another {NAMESPACE}:network.sdn_subnet (or the pool another "
            "vpc_cidr), or remove those routes from the other devices",
        )
    return ok(
        AREA,
        "routes",
        f"no other device of {len(devices)} routes {config.network.sdn_subnet} or a pool's VPC",
    )

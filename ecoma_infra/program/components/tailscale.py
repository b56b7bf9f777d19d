"""Tailscale: one auth key per node, and the approved subnet routes of the on-prem routers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pulumi
import pulumi_tailscale as tailscale

from ecoma_infra.program.tailnet_policy import tailnet_policy
from ecoma_infra.stack.model import Role, StackConfig, TailscaleSettings
from ecoma_infra.stack.pulumi_config import Secrets


def node_auth_key(
    name: str,
    node_name: str,
    role: Role,
    settings: TailscaleSettings,
    *,
    ephemeral: bool,
    parent: pulumi.Resource,
    provider: pulumi.ProviderResource,
    depends_on: Sequence[pulumi.Resource] = (),
    replacement_trigger: Mapping[str, object] | None = None,
) -> tailscale.TailnetKey:
    """A single-use, pre-authorized, short-lived key tagged with the node's role.

    Single-use keys are not recreated once used (the provider's default for them), so a key
    consumed at first boot does not churn the node's user data on later updates.
    Burst nodes get ephemeral keys: their devices leave the tailnet when they go offline.
    `depends_on` delays minting until the machine is next in line to be created, and
    `replacement_trigger` (the inputs that replace the machine) mints a fresh key whenever the
    machine is replaced: the engine replaces the key when the value differs from the last one.
    """
    return tailscale.TailnetKey(
        name,
        description=f"ecoma {node_name}",
        reusable=False,
        ephemeral=ephemeral,
        preauthorized=True,
        expiry=settings.key_expiry_seconds,
        tags=[settings.tags[role]],
        # The SDK already marks `key` as a secret output.
        opts=pulumi.ResourceOptions(
            parent=parent,
            provider=provider,
            depends_on=list(depends_on),
            replacement_trigger=(
                json.dumps(dict(replacement_trigger), sort_keys=True)
                if replacement_trigger is not None
                else None
            ),
        ),
    )


class SubnetRoutes(pulumi.ComponentResource):
    """Approves the SDN subnet route advertised by each on-prem router node.

    The device lookup waits for the router to have joined the tailnet; `depends_on` the router's
    machine so that on a first `up` it runs after the VM exists (and cloud-init has joined).
    """

    def __init__(
        self,
        name: str,
        routers: dict[str, pulumi.Resource],
        routes: list[str],
        *,
        provider: pulumi.ProviderResource,
        wait_for: str = "15m",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ecoma:tailscale:SubnetRoutes", name, None, opts)
        self.route_ids: dict[str, pulumi.Output[str]] = {}
        for router, machine in sorted(routers.items()):
            device = tailscale.get_device_output(
                hostname=router,
                wait_for=wait_for,
                opts=pulumi.InvokeOutputOptions(
                    parent=self, provider=provider, depends_on=[machine]
                ),
            )
            approved = tailscale.DeviceSubnetRoutes(
                f"{name}-{router}",
                device_id=device.node_id,
                routes=routes,
                opts=pulumi.ResourceOptions(parent=self, provider=provider),
            )
            self.route_ids[router] = approved.id
        self.register_outputs({"routers": sorted(routers)})


# What the program does with the Tailscale API: mint keys, approve routes, set the policy.
OAUTH_SCOPES = ["auth_keys", "devices:core", "devices:routes", "policy_file"]


def make_provider(
    name: str,
    settings: TailscaleSettings,
    secrets: Secrets,
    opts: pulumi.ResourceOptions | None = None,
) -> tailscale.Provider:
    if settings.oauth_client_id:
        return tailscale.Provider(
            name,
            tailnet=settings.tailnet,
            oauth_client_id=settings.oauth_client_id,
            oauth_client_secret=secrets.require("tailscale_oauth_client_secret"),
            scopes=OAUTH_SCOPES,
            opts=opts,
        )
    return tailscale.Provider(
        name, tailnet=settings.tailnet, api_key=secrets.require("tailscale_api_key"), opts=opts
    )


class TailnetPolicy(pulumi.ComponentResource):
    """The tailnet policy file as code (see `ecoma_infra.program.tailnet_policy`). It replaces the
    policy of the whole tailnet: keys can only carry tags that it lets the CI own."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        *,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ecoma:tailscale:TailnetPolicy", name, None, opts)
        self.acl = tailscale.Acl(
            f"{name}-acl",
            acl=json.dumps(
                tailnet_policy(config, admins=config.tailscale.admins), indent=2, sort_keys=True
            ),
            overwrite_existing_content=True,
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.register_outputs({"acl_id": self.acl.id})

"""The whole stack from one validated config: what `__main__.py` calls.

Order of construction: providers, the SDN, the template (when the stack makes it), the on-prem
nodes (clones in `clone_parallelism` lanes, so that at most that many run at once), the subnet
routes, the burst pools, then the outputs.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

import pulumi

from ecoma_infra.program import adopt
from ecoma_infra.program.components import proxmox as pve
from ecoma_infra.program.components import tailscale as ts
from ecoma_infra.program.components import template as tpl
from ecoma_infra.program.components.pool import BurstPoolArgs, BurstPoolComponent
from ecoma_infra.program.inventory import NodeFact, build_inventory
from ecoma_infra.stack.model import ROLES, CloudProvider, StackConfig
from ecoma_infra.stack.pulumi_config import Secrets, as_secret

POOL_CLASSES: dict[CloudProvider, str] = {
    "aws": "AwsBurstPool",
    "gcp": "GcpBurstPool",
    "oci": "OciBurstPool",
}


def build_stack(config: StackConfig, secrets: Secrets) -> None:
    stack = pulumi.get_stack()
    # Before any resource: the transformation applies to what is constructed after it.
    adoption = adopt.register(config.adopt)
    proxmox_provider = pve.make_provider(config.proxmox, secrets)
    tailscale_provider = ts.make_provider("tailscale", config.tailscale, secrets)
    policy = ts.TailnetPolicy("tailnet-policy", config, provider=tailscale_provider)
    # Keys may only carry tags the policy lets the CI own: mint them once it is in place.
    keys_provider = ts.make_provider(
        "tailscale-keys", config.tailscale, secrets, pulumi.ResourceOptions(depends_on=[policy.acl])
    )
    sdn = pve.ProxmoxSdn("sdn", config.proxmox, config.network, provider=proxmox_provider)
    # The template first, when the stack makes it (ecoma:proxmox.template_image): every clone
    # waits for it.
    prerequisites: list[pulumi.Resource] = [sdn.applied]
    if config.proxmox.template_image is not None:
        template = tpl.ProxmoxTemplate(
            "template",
            tpl.ProxmoxTemplateArgs(stack, config.proxmox, config.proxmox.template_image),
            provider=proxmox_provider,
        )
        prerequisites.append(template.vm)

    nodes: dict[str, pve.ProxmoxNode] = {}
    vms: list[pulumi.Resource] = []
    width = config.proxmox.clone_parallelism
    for node in sorted(config.nodes, key=lambda n: (ROLES.index(n.role), n.name)):
        # Parallel clones fight over storage locks: each clone waits for the one `width` places
        # before it (`width` lanes), so at most `width` run at once.
        component = pve.ProxmoxNode(
            node.name,
            pve.ProxmoxNodeArgs(
                stack=stack,
                node=node,
                settings=config.proxmox,
                network=config.network,
                ssh=config.ssh,
                storage=config.storage,
                tailscale=config.tailscale,
                vnet_id=sdn.vnet_id,
            ),
            provider=proxmox_provider,
            tailscale_provider=keys_provider,
            prerequisites=prerequisites,
            after=vms[-width] if len(vms) >= width else None,
        )
        nodes[node.name] = component
        vms.append(component.vm)

    ts.SubnetRoutes(
        "sdn-routes",
        {router: nodes[router].vm for router in config.tailscale.subnet_routers},
        [str(config.network.sdn_subnet)],
        provider=tailscale_provider,
    )

    pools: dict[str, BurstPoolComponent] = {}
    for provider_name, pool in config.burst.pools().items():
        module = importlib.import_module(f"ecoma_infra.program.components.{provider_name}")
        cloud = module.make_provider(provider_name, pool, secrets, stack=stack)
        pool_class = getattr(module, POOL_CLASSES[provider_name])
        pools[provider_name] = pool_class(
            f"burst-{provider_name}",
            BurstPoolArgs(
                stack=stack,
                provider=provider_name,
                pool=pool,
                ssh=config.ssh,
                storage=config.storage,
                tailscale=config.tailscale,
                network=config.network,
            ),
            provider=cloud,
            tailscale_provider=keys_provider,
        )

    facts: list[pulumi.Output[NodeFact]] = [
        pulumi.Output.from_input(component.fact) for component in nodes.values()
    ]
    facts += [fact for pool in pools.values() for fact in pool.node_facts]
    inventory = pulumi.Output.all(*facts).apply(
        lambda resolved: build_inventory(stack, config, resolved)
    )
    export_outputs(config, secrets, nodes, inventory)
    adoption.check_all_applied()


def burst_summary(config: StackConfig) -> dict[str, Any]:
    pools = config.burst.pools()
    return {
        "budget_usd_per_hour": config.burst.budget_usd_per_hour,
        "hourly_cost_usd": round(sum(p.hourly_cost() for p in pools.values()), 4),
        "pools": {
            name: {
                "count": pool.count,
                "max": pool.max,
                "ttl": pool.ttl,
                "hourly_cost_usd": round(pool.hourly_cost(), 4),
                "nodes": {
                    node: {
                        "launched_at": _iso(pool.launched_at.get(node)),
                        "expires_at": _iso(pool.expires_at.get(node)),
                    }
                    for node in pool.node_names(name)
                },
            }
            for name, pool in pools.items()
        },
        "last_scaled_at": _iso(config.burst.last_scaled_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def export_outputs(
    config: StackConfig,
    secrets: Secrets,
    nodes: dict[str, pve.ProxmoxNode],
    inventory: pulumi.Output[dict[str, Any]],
) -> None:
    pulumi.export("ansible_inventory", inventory)
    pulumi.export("kube_vip", str(config.network.kube_vip))
    pulumi.export(
        "nodes",
        [
            {"name": n.name, "role": n.role, "provider": n.provider, "ip": str(n.ip)}
            for n in sorted(config.nodes, key=lambda n: n.name)
        ],
    )
    pulumi.export("burst", burst_summary(config))
    # What `ecoma-infra configure --stack` hands to Ansible through its environment; secret
    # outputs are encrypted in the state and shown as [secret].
    pulumi.export("k3s_token", as_secret(secrets.require("k3s_token")))
    pulumi.export("k3s_agent_token", as_secret(secrets.require("k3s_agent_token")))
    if config.k3s.etcd_snapshots.s3 is not None:
        # The servers upload their etcd snapshots with these (configure hands them over).
        for key in ("etcd_s3_access_key_id", "etcd_s3_secret_access_key"):
            pulumi.export(key, as_secret(secrets.require(key)))
    pulumi.export(
        "tailscale_auth_keys",
        pulumi.Output.secret(
            pulumi.Output.all(**{name: c.tailscale_key for name, c in sorted(nodes.items())})
        ),
    )

"""Pulumi component resources: one module per provider (and Tailscale), type tokens
`ecoma:<module>:<Type>`, children named from the component's name and parented to it.

The provider SDKs are imported here first, after `sdk_loader.install()`: the program then loads
only the members of each provider package that it uses."""

from ecoma_infra.program import sdk_loader

sdk_loader.install()

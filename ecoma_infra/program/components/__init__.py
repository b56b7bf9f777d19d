"""Pulumi component resources: one module per provider (and Tailscale), type tokens
`ecoma:<module>:<Type>`, children named from the component's name and parented to it."""

"""Day-2 operations of a running cluster: a rolling k3s upgrade, replacing a node, on-demand etcd
snapshots. Drain first and never losing data, through the same seams as bursting
(`platforms.seams`): the Kubernetes API for cordon, drain, readiness and etcd health, the
playbook for what happens on the machines, the Pulumi stack and Proxmox for rebuilding a VM."""

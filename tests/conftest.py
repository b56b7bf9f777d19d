"""Shared fixtures: the lab fixtures (real Debian hosts in network namespaces)."""

pytest_plugins = ["lab_fixtures", "prometheus_server"]

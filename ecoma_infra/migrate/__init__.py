"""Migrating from the Terraform + Ansible codebase (see docs/migration.md)."""

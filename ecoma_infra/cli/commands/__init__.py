"""Subcommands of `ecoma-infra`: one module each, discovered by `ecoma_infra.cli.main`."""

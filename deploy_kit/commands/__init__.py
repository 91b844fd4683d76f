"""CLI command groups; see deploy_kit.cli.COMMAND_MODULES."""

"""Stack configs, the config schema, the platform assembly, the offline plan and the CLI."""

"""Command-line interface: one module per subcommand, all registered on `app`."""

"""The `kgpipe` subcommands, one module per group; `pipeline.cli` runs them."""

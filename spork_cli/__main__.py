"""Entry point for ``python -m spork_cli``."""

from spork_cli.cli import main

main()

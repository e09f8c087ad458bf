"""spork: a local development API gateway and the command-line tool that drives it."""

__version__ = "0.1.0"

"""Core of the UZO migration toolkit: settings, errors, the CLI, tokens, the Mongo interface."""

__version__ = "0.1.0"

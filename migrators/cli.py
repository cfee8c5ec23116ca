"""``strangler backfill|sync|verify|dlq|secrets|rehearse|reverse-sync``: the migration
commands (``flags`` is the control plane's: control/cli.py).

Each command group lives in its own module with a ``register(subparsers)``;
this module only lists them.
"""

from __future__ import annotations

import argparse
import importlib

COMMAND_MODULES: tuple[str, ...] = (
    "migrators.cli_backfill",
    "migrators.cli_sync",
    "migrators.cli_verify",
    "migrators.cli_secrets",
    "migrators.cli_dlq",
    "migrators.cli_rehearse",
    "migrators.cli_reverse",
)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)

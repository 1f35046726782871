"""`semhash serve|index|migrate`: the service-side commands."""

from __future__ import annotations

import typer


def register_service_commands(app: typer.Typer) -> None:
    """Attach the service commands to the root `semhash` app."""

"""Run the Alembic migrations programmatically (``llmbus migrate`` and ``llmbus up``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import llmbus.migrations


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(llmbus.migrations.__file__).parent))
    # ConfigParser interpolates '%': escape it so URL-quoted passwords survive.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_to_head(url: str) -> None:
    """Bring the schema to the newest revision; safe to run repeatedly."""
    command.upgrade(alembic_config(url), "head")

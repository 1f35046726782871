"""Alembic environment and versions for the service database (see `service/migrate.py`)."""

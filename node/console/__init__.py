"""The operator console: accounts, sessions, pages and the audit trail (docs/console.md)."""
from __future__ import annotations

from typing import Any

from starlette.routing import Route

__all__ = ["console_app_routes"]


def console_app_routes(ctx: Any) -> list[Route]:
    """The console's routes for the HTTP port's context (tables created if missing)."""
    from .accounts import Accounts
    from .app import console_routes
    from .store import ConsoleStore

    store = ConsoleStore(ctx.get_conn)  # its tables come with the database (node.state.schema, version 3)
    accounts = Accounts(store, session_hours=ctx.config.console.session_hours)
    return console_routes(ctx, store, accounts)

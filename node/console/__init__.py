"""The operator console: accounts, sessions, pages and the audit trail (docs/console.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

if TYPE_CHECKING:  # node.web.server mounts the console: a runtime import would be a cycle
    from ..web.context import WebContext

__all__ = ["console_app_routes"]


def console_app_routes(ctx: WebContext) -> list[Route]:
    """The console's routes for the HTTP port's context (tables created if missing)."""
    from .accounts import Accounts
    from .app import console_routes
    from .store import ConsoleStore

    store = ConsoleStore(ctx.get_conn)  # its tables come with the database (node.state.schema, version 3)
    accounts = Accounts(store, session_hours=ctx.config.console.session_hours)
    return console_routes(ctx, store, accounts)

"""The node's state: one SQLite database under ``storage_dir``, owned by this package.

Every SQL statement of the node lives here, behind one small repository per
concern; the rest of the node calls their methods and never writes SQL:

- :mod:`~node.state.instances` -- the spool index (``instances``), study views for pipelines;
- :mod:`~node.state.studies` -- study completion (``pending_studies``) and a study's derived state;
- :mod:`~node.state.jobs` -- pipeline jobs (``jobs``) and their result files (``results``);
- :mod:`~node.state.deliveries` -- the dispatch queue (``deliveries``, ``destination_state``,
  ``destination_pause``);
- :mod:`~node.state.accounts` -- console users and login sessions (``console_users``, ``console_sessions``);
- :mod:`~node.state.audit` -- the append-only audit trail (``audit_events``);
- :mod:`~node.state.notifications` -- webhook messages (``notifications``).

:mod:`~node.state.schema` holds the schema and its numbered migrations
(``PRAGMA user_version``); :func:`connect` migrates a database when it opens
it.  :mod:`~node.state.connection` holds the per-thread connections and
:func:`transaction`, the one way to make several writes atomic.
"""
from __future__ import annotations

from .accounts import Users
from .audit import AuditEvents, AuditQuery
from .connection import DB_FILENAME, Connections, check_version, connect, ping, transaction
from .deliveries import Deliveries, add_deliveries
from .instances import InstanceIndex, StudySummary
from .jobs import Jobs, OwnResults, enqueue_job
from .notifications import Notifications
from .schema import SCHEMA_VERSION, SchemaTooNew, schema_version
from .studies import STUDY_STATES, Studies

__all__ = [
    "DB_FILENAME", "Connections", "check_version", "connect", "ping", "transaction",
    "SCHEMA_VERSION", "SchemaTooNew", "schema_version",
    "InstanceIndex", "StudySummary", "Studies", "STUDY_STATES", "Jobs", "OwnResults", "enqueue_job",
    "Deliveries", "add_deliveries", "Users", "AuditEvents", "AuditQuery",
    "Notifications",
]

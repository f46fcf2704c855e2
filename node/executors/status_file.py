"""The executor's last reported state as a small JSON file beside the database.

``cardionode status`` runs in another process than the node; it reads what the
running node last wrote here (connected or not, why, workers per pipeline),
together with the writer's pid so that a stale file from a node that is no
longer running is shown as such.  Written with a rename, never partially read.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..files import open_private
from .base import ExecutorStatus

__all__ = ["STATUS_FILE_NAME", "write_status", "read_status"]

STATUS_FILE_NAME = "executor.json"


def write_status(storage_dir: Path, status: ExecutorStatus) -> None:
    """Replace ``<storage_dir>/executor.json`` with ``status`` (and our pid, and the time)."""
    path = Path(storage_dir) / STATUS_FILE_NAME
    tmp = path.with_name(f".{STATUS_FILE_NAME}.{os.getpid()}.tmp")
    with open_private(tmp) as fh:  # 0600, like everything the node writes
        fh.write(json.dumps({"pid": os.getpid(), "updated_at": time.time(), **status.to_json()},
                            default=str).encode("utf-8"))
    os.replace(tmp, path)


def read_status(storage_dir: Path) -> dict[str, Any] | None:
    """The last written state plus ``node_running`` (is the writer's pid alive?); None when never written."""
    path = Path(storage_dir) / STATUS_FILE_NAME
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"state": "unknown", "detail": f"cannot read {path}: {exc}", "node_running": False}
    try:
        pid = int(data.get("pid", 0))
        if pid <= 0:
            raise ValueError(pid)
        os.kill(pid, 0)
        data["node_running"] = True
    except (ProcessLookupError, ValueError, TypeError):
        data["node_running"] = False
    except PermissionError:  # another user's live process
        data["node_running"] = True
    return data

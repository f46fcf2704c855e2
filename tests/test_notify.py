"""Webhook notifications: stored per webhook, POSTed as JSON by the sender thread, retried with backoff,
given up after max_attempts, every outcome in the audit trail; a real HTTP receiver on loopback."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from node.config import ConfigError, parse_config
from node.console.store import ConsoleStore
from node.notify import Notifier
from node.state import AuditQuery, Connections
from tests.support.peers import wait_for
from tests.support.webhook import Receiver


@pytest.fixture()
def conns(tmp_path: Path) -> Iterator[Connections]:
    c = Connections(tmp_path / "var")
    yield c
    c.close_all()


def _settings(webhooks: dict, **kw: object):
    return parse_config({"notifications": {"webhooks": webhooks, "backoff_initial_s": 0.2, "backoff_max_s": 0.5,
                                           **kw}}).notifications


def test_a_failed_job_reaches_the_webhook_after_retries_and_every_outcome_is_recorded(conns) -> None:
    hook = Receiver([500, 503])
    store = ConsoleStore(conns.get)
    try:
        settings = _settings({"ops": {"url": hook.url, "token": "s3cret"},
                              "pager": {"url": hook.url, "events": ["disk_low"]}})
        notifier = Notifier(settings, conns.get, "CARDIONODE", audit=store.audit)
        notifier.start()
        ids = notifier.emit("job_failed", "1.2.3", {"job": 7, "pipeline": "calcium", "error": "input: no CT"})
        assert len(ids) == 1  # the pager webhook did not subscribe to job_failed
        assert wait_for(lambda: len(hook.requests) == 3, 15)
        notifier.stop()
        body = hook.requests[-1]["body"]
        assert body["event"] == "job_failed" and body["subject"] == "1.2.3" and body["node"] == "CARDIONODE"
        assert body["detail"] == {"job": 7, "pipeline": "calcium", "error": "input: no CT"}
        assert hook.requests[-1]["auth"] == "Bearer s3cret"
        assert [r["body"]["id"] for r in hook.requests] == ids * 3  # the same message, retried
        events = store.search_audit(AuditQuery(kind="notification"))
        assert [e["action"] for e in reversed(events)] == ["notification retry", "notification retry",
                                                          "notification sent"]
        assert events[-1]["detail"]["error"] == "HTTP 500" and events[0]["subject"] == "1.2.3"
        assert store.recent_notifications()[0]["state"] == "sent"
    finally:
        hook.close()


def test_a_webhook_that_never_answers_is_given_up_after_max_attempts(conns) -> None:
    store = ConsoleStore(conns.get)
    notifier = Notifier(_settings({"down": {"url": "http://127.0.0.1:9/hook"}}, max_attempts=2, timeout_s=2),
                        conns.get, "CARDIONODE", audit=store.audit)
    notifier.start()
    try:
        notifier.emit("delivery_failed", "1.2.4", {"destination": "pacs"})
        assert wait_for(lambda: store.recent_notifications()[0]["state"] == "failed", 15)
    finally:
        notifier.stop()
    row = store.recent_notifications()[0]
    assert row["attempts"] == 2 and "ConnectionError" in row["last_error"]
    actions = [e["action"] for e in store.search_audit(AuditQuery(kind="notification"))]
    assert actions == ["notification given up", "notification retry"]


def test_pending_messages_survive_a_restart_and_disk_low_is_told_once_per_episode(conns) -> None:
    hook = Receiver([])
    try:
        settings = _settings({"ops": {"url": hook.url}})
        first = Notifier(settings, conns.get, "CARDIONODE")  # never started: the node stopped before sending
        first.check_disk(False, 500, "/var/lib/cardionode")
        first.check_disk(False, 500, "/var/lib/cardionode")  # still low: no second message
        first.check_disk(True, 500, "/var/lib/cardionode")
        first.check_disk(False, 500, "/var/lib/cardionode")  # low again: a new episode
        second = Notifier(settings, conns.get, "CARDIONODE")
        second.start()
        assert wait_for(lambda: len(hook.requests) == 2, 15)
        second.stop()
        time.sleep(0.3)
        assert [r["body"]["event"] for r in hook.requests] == ["disk_low", "disk_low"]
        assert hook.requests[0]["body"]["detail"]["min_free_mb"] == 500
    finally:
        hook.close()


def test_webhook_config_is_checked_at_load() -> None:
    with pytest.raises(ConfigError, match=r"notifications\.webhooks\.x\.events: unknown event 'job_done'"):
        _settings({"x": {"url": "http://h/", "events": ["job_done"]}})
    with pytest.raises(ConfigError, match=r"notifications\.webhooks\.x\.url"):
        _settings({"x": {"url": "ftp://h/"}})

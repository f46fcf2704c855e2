"""Operator console: accounts, sessions, CSRF and every role boundary, over real HTTP (uvicorn) against a
real node database; the ``cardionode user`` commands as a subprocess."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from node import state
from node.config import parse_config
from node.console.accounts import Accounts
from node.console.store import ConsoleStore
from node.dispatch.queue import DestinationWorker
from node.jobs import JobQueue
from node.state import Connections, add_deliveries
from node.web.metrics import Metrics
from node.web.server import HttpServer, WebContext

TOKEN = "t0ken-for-console-tests"
PASSWORDS = {"reader": "reader-password-1", "op": "operator-password-1", "boss": "admin-password-12"}
ROLES = {"reader": "read-only", "op": "operator", "boss": "admin"}
STUDY = "1.2.826.0.1.3680043.8.498.1"
WAITING = "1.2.826.0.1.3680043.8.498.2"

#: action -> the role it needs (what the console's table promises)
OPERATOR_ACTIONS = ("retry-job", "abort-job", "retry-delivery", "pause-destination", "resume-destination",
                    "complete-study", "reprocess-study")
ADMIN_ACTIONS = ("reload-models", "user-add", "user-remove", "user-password", "user-role")


class Node:
    def __init__(self, server: HttpServer, conns: Connections, ids: dict[str, int], calls: list[str]) -> None:
        self.server, self.conns, self.ids, self.calls = server, conns, ids, calls
        self.url = server.url

    def row(self, sql: str, *args: object) -> dict:
        r = self.conns.get().execute(sql, args).fetchone()
        return dict(r) if r is not None else {}

    def snapshot(self) -> list:
        """Node state the actions could change (the audit trail aside)."""
        conn = self.conns.get()
        return [[tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1")]
                for t in ("jobs", "deliveries", "pending_studies", "destination_pause", "console_users")]


def _seed(conn) -> dict[str, int]:
    now = time.time()
    with conn:
        conn.execute("INSERT INTO pending_studies (study_uid, state, generation, first_received_at, last_received_at,"
                     " due_at, quiet_seconds, received, processed_at, routes) VALUES (?, 'processed', 1, ?, ?, NULL,"
                     " 30, 3, ?, ?)", (STUDY, now - 100, now - 90, now - 60, json.dumps(["xa"])))
        conn.execute("INSERT INTO pending_studies (study_uid, state, generation, first_received_at, last_received_at,"
                     " due_at, quiet_seconds, received) VALUES (?, 'waiting', 1, ?, ?, ?, 30, 1)",
                     (WAITING, now - 5, now - 5, now + 25))
        for i in range(3):
            conn.execute("INSERT INTO instances (sop_instance_uid, study_instance_uid, series_instance_uid,"
                         " sop_class_uid, modality, series_description, transfer_syntax_uid, path, size, calling_ae,"
                         " received_at) VALUES (?, ?, ?, '1.2.840.10008.5.1.4.1.1.12.1', 'XA', 'LCA RAO', "
                         "'1.2.840.10008.1.2.1', '/x', 1, 'MODALITY', ?)", (f"{STUDY}.{i}", STUDY, STUDY + ".9", now))
        failed = JobQueue.enqueue(conn, STUDY, 1, "xa", "syntax", ["pacs"])
        queued = JobQueue.enqueue(conn, STUDY, 1, "xa2", "syntax", ["pacs"])
        done = JobQueue.enqueue(conn, STUDY, 1, "xa3", "syntax", ["pacs"])
        conn.execute("UPDATE jobs SET state='failed', error='input: no XA series', attempts=1, finished_at=?"
                     " WHERE id=?", (now, failed))
        conn.execute("UPDATE jobs SET state='done', finished_at=? WHERE id=?", (now, done))
        add_deliveries(conn, done, [("9.9.1", "/nonexistent/a.dcm")], ["pacs"])
        conn.execute("UPDATE deliveries SET state='failed', attempts=5, last_error='association rejected'")
        delivery = conn.execute("SELECT id FROM deliveries").fetchone()[0]
    return {"failed": failed, "queued": queued, "done": done, "delivery": delivery}


def _config(tmp_path: Path):
    return parse_config({
        "node": {"storage_dir": str(tmp_path / "var"), "http_host": "127.0.0.1", "http_port": 0},
        "api": {"token": TOKEN},
        "console": {"viewer_url": "http://viewer.example/viewer?StudyInstanceUIDs={study_uid}"},
        "destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": 9}},
        "routes": [{"name": "xa", "pipeline": "syntax", "match": {"modality": ["XA"]}, "destinations": ["pacs"]},
                   {"name": "ct", "pipeline": "calcium", "match": {"modality": ["CT"]}, "destinations": ["pacs"]}],
    })


@pytest.fixture(scope="module")
def users_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with the three users (argon2 hashing takes about a second each on a loaded machine)."""
    folder = tmp_path_factory.mktemp("users")
    conn = state.connect(folder)
    accounts = Accounts(ConsoleStore(lambda: conn))
    for user, password in PASSWORDS.items():
        accounts.add(user, ROLES[user], password)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return folder / state.DB_FILENAME


@pytest.fixture()
def node(tmp_path: Path, users_db: Path) -> Iterator[Node]:
    config = _config(tmp_path)
    (tmp_path / "var").mkdir(mode=0o700)
    (tmp_path / "var" / state.DB_FILENAME).write_bytes(users_db.read_bytes())
    conns = Connections(config.node.storage_dir)
    conn = conns.get()
    ids = _seed(conn)
    calls: list[str] = []
    ctx = WebContext(config=config, get_conn=conns.get, metrics=Metrics(conns.get),
                     wake_dispatch=lambda: calls.append("wake_dispatch"),
                     complete_study=lambda uid: calls.append(f"complete {uid}"),
                     reload_models=lambda: calls.append("reload_models"))
    server = HttpServer(config, ctx)
    server.start()
    yield Node(server, conns, ids, calls)
    server.stop()
    conns.close_all()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def login(node: Node, user: str, password: str | None = None) -> tuple[requests.Session, str]:
    """A logged-in browser-like session and its CSRF token."""
    s = requests.Session()
    page = s.get(node.url + "/console/login", timeout=10)
    r = s.post(node.url + "/console/login", timeout=10, allow_redirects=False,
               data={"csrf": _csrf(page.text), "username": user, "password": password or PASSWORDS[user],
                     "next": "/console/studies"})
    assert r.status_code == 303, r.text
    studies = s.get(node.url + "/console/studies", timeout=10)
    assert studies.status_code == 200
    return s, _csrf(studies.text)


def _target(node: Node, action: str) -> str:
    return {"retry-job": str(node.ids["failed"]), "abort-job": str(node.ids["queued"]),
            "retry-delivery": str(node.ids["delivery"]), "pause-destination": "pacs", "resume-destination": "pacs",
            "complete-study": WAITING, "reprocess-study": STUDY, "reload-models": "",
            "user-add": "newuser", "user-remove": "reader", "user-password": "reader",
            "user-role": "reader"}[action]


PAGES = ("/console/studies", f"/console/studies/{STUDY}", "/console/jobs", "/console/models", "/console/audit",
         "/console/audit?format=csv", "/console/users", "/console/confirm/retry-job?target=1")


# ---------------------------------------------------------------------------------------------- no session
@pytest.mark.parametrize("path", PAGES)
def test_every_page_without_a_session_goes_to_the_login_page(node: Node, path: str) -> None:
    r = requests.get(node.url + path, timeout=10, allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=")
    assert STUDY not in r.text
    # a forged or expired cookie is no session either
    r = requests.get(node.url + path, timeout=10, allow_redirects=False, cookies={"cardionode_session": "forged"})
    assert r.status_code == 303


def test_every_action_without_a_session_is_401_and_changes_nothing(node: Node) -> None:
    before = node.snapshot()
    for action in OPERATOR_ACTIONS + ADMIN_ACTIONS + ("nonexistent",):
        r = requests.post(node.url + f"/console/actions/{action}", timeout=10, allow_redirects=False,
                          data={"target": _target(node, action) if action != "nonexistent" else "x", "csrf": "x",
                                "role": "admin", "password": "whatever-password"})
        assert r.status_code == 401, action
    assert requests.post(node.url + "/console/logout", timeout=10, data={"csrf": "x"}).status_code == 401
    assert node.snapshot() == before and node.calls == []


# ---------------------------------------------------------------------------------------------- login
def test_login_cookie_is_httponly_strict_and_passwords_are_argon2(node: Node) -> None:
    s = requests.Session()
    page = s.get(node.url + "/console/login", timeout=10)
    r = s.post(node.url + "/console/login", timeout=10, allow_redirects=False,
               data={"csrf": _csrf(page.text), "username": "op", "password": PASSWORDS["op"]})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    session_cookie = [c for c in cookie.split(", cardionode")
                      if "cardionode_session=" in c or c.startswith("_session=")]
    assert session_cookie and "HttpOnly" in session_cookie[0] and "SameSite=strict" in session_cookie[0]
    assert "Secure" not in session_cookie[0]  # plain HTTP here; under node.http_tls it is Secure (see below)
    stored = node.row("SELECT password_hash FROM console_users WHERE username='op'")["password_hash"]
    assert stored.startswith("$argon2id$") and PASSWORDS["op"] not in stored
    token = s.cookies.get("cardionode_session")
    assert node.row("SELECT COUNT(*) AS n FROM console_sessions WHERE token_sha256=?", token)["n"] == 0  # hash only


def test_wrong_password_or_unknown_user_or_missing_login_csrf_is_refused_and_recorded(node: Node) -> None:
    s = requests.Session()
    csrf = _csrf(s.get(node.url + "/console/login", timeout=10).text)
    for user, password in (("op", "wrong-password-x"), ("nobody", "whatever-password")):
        r = s.post(node.url + "/console/login", timeout=10, allow_redirects=False,
                   data={"csrf": csrf, "username": user, "password": password})
        assert r.status_code == 401 and "wrong user name or password" in r.text
        assert "cardionode_session" not in s.cookies
    # the right password without the login form's token (a cross-site post) is refused too
    r = requests.post(node.url + "/console/login", timeout=10, allow_redirects=False,
                      data={"username": "op", "password": PASSWORDS["op"]})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    refused = node.conns.get().execute("SELECT actor FROM audit_events WHERE action='login refused'").fetchall()
    assert sorted(r["actor"] for r in refused) == ["nobody", "op"]


def test_login_next_is_never_an_open_redirect(node: Node) -> None:
    s = requests.Session()
    csrf = _csrf(s.get(node.url + "/console/login", timeout=10).text)
    r = s.post(node.url + "/console/login", timeout=10, allow_redirects=False,
               data={"csrf": csrf, "username": "op", "password": PASSWORDS["op"], "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/console/studies"


def test_logout_needs_csrf_and_ends_the_session(node: Node) -> None:
    s, csrf = login(node, "op")
    token = s.cookies.get("cardionode_session")
    assert s.post(node.url + "/console/logout", data={}, timeout=10).status_code == 403
    assert s.get(node.url + "/console/jobs", timeout=10, allow_redirects=False).status_code == 200
    r = s.post(node.url + "/console/logout", data={"csrf": csrf}, timeout=10, allow_redirects=False)
    assert r.status_code == 303
    replay = requests.get(node.url + "/console/jobs", timeout=10, allow_redirects=False,
                          cookies={"cardionode_session": token})
    assert replay.status_code == 303


# ---------------------------------------------------------------------------------------------- CSRF
@pytest.mark.parametrize("csrf", [None, "", "wrong-token"])
def test_missing_or_wrong_csrf_is_403_and_changes_nothing(node: Node, csrf: str | None) -> None:
    s, _good = login(node, "boss")
    before = node.snapshot()
    for action in OPERATOR_ACTIONS + ADMIN_ACTIONS:
        data = {"target": _target(node, action), "role": "admin", "password": "another-password-1"}
        if csrf is not None:
            data["csrf"] = csrf
        r = s.post(node.url + f"/console/actions/{action}", data=data, timeout=10)
        assert r.status_code == 403 and "CSRF" in r.text, action
    assert node.snapshot() == before and node.calls == []


def test_another_sessions_csrf_token_does_not_work(node: Node) -> None:
    s, _mine = login(node, "op")
    _other, theirs = login(node, "boss")
    r = s.post(node.url + "/console/actions/retry-job", data={"csrf": theirs, "target": str(node.ids["failed"])},
               timeout=10)
    assert r.status_code == 403
    assert node.row("SELECT state FROM jobs WHERE id=?", node.ids["failed"])["state"] == "failed"


# ---------------------------------------------------------------------------------------------- roles
@pytest.mark.parametrize("action", OPERATOR_ACTIONS + ADMIN_ACTIONS)
def test_read_only_is_refused_every_action(node: Node, action: str) -> None:
    s, csrf = login(node, "reader")
    assert s.get(node.url + f"/console/confirm/{action}?target=1", timeout=10).status_code == 403
    before = node.snapshot()
    r = s.post(node.url + f"/console/actions/{action}", timeout=10,
               data={"csrf": csrf, "target": _target(node, action), "role": "admin", "password": "another-password-1"})
    assert r.status_code == 403 and "read-only" in r.text
    assert node.snapshot() == before and node.calls == []
    refused = node.row("SELECT actor, subject FROM audit_events WHERE action=?", f"{action} refused")
    assert refused["actor"] == "reader"


@pytest.mark.parametrize("action", ADMIN_ACTIONS)
def test_operator_is_refused_admin_actions(node: Node, action: str) -> None:
    s, csrf = login(node, "op")
    assert s.get(node.url + f"/console/confirm/{action}?target=x", timeout=10).status_code == 403
    before = node.snapshot()
    r = s.post(node.url + f"/console/actions/{action}", timeout=10,
               data={"csrf": csrf, "target": _target(node, action), "role": "admin", "password": "another-password-1"})
    assert r.status_code == 403 and "admin" in r.text
    assert node.snapshot() == before and node.calls == []


def test_users_page_is_for_admins_only(node: Node) -> None:
    for user, status in (("reader", 403), ("op", 403), ("boss", 200)):
        s, _ = login(node, user)
        assert s.get(node.url + "/console/users", timeout=10).status_code == status, user


def test_read_only_sees_every_page_but_no_action_buttons(node: Node) -> None:
    s, _ = login(node, "reader")
    for path in PAGES[:5]:
        r = s.get(node.url + path, timeout=10)
        assert r.status_code == 200, path
        assert "/console/confirm/" not in r.text, path


# ---------------------------------------------------------------------------------------------- actions
def _act(node: Node, s: requests.Session, csrf: str, action: str, target: str, **extra: str) -> requests.Response:
    confirm = s.get(node.url + f"/console/confirm/{action}", params={"target": target}, timeout=10)
    assert confirm.status_code == 200 and 'id="confirm"' in confirm.text
    return s.post(node.url + f"/console/actions/{action}", data={"csrf": _csrf(confirm.text), "target": target,
                                                                **extra}, timeout=10)


def test_operator_actions_do_what_they_say_and_are_recorded(node: Node) -> None:
    s, csrf = login(node, "op")
    ids = node.ids
    assert _act(node, s, csrf, "retry-job", str(ids["failed"])).status_code == 200
    assert node.row("SELECT state, attempts FROM jobs WHERE id=?", ids["failed"]) == {"state": "queued", "attempts": 0}
    assert _act(node, s, csrf, "retry-job", str(ids["done"])).status_code == 409  # only a failed job
    assert _act(node, s, csrf, "abort-job", str(ids["queued"])).status_code == 200
    row = node.row("SELECT state, error FROM jobs WHERE id=?", ids["queued"])
    assert row["state"] == "failed" and "aborted by op" in row["error"]
    assert _act(node, s, csrf, "retry-delivery", str(ids["delivery"])).status_code == 200
    assert node.row("SELECT state, attempts FROM deliveries WHERE id=?", ids["delivery"]) == {"state": "pending",
                                                                                            "attempts": 0}
    assert _act(node, s, csrf, "pause-destination", "pacs").status_code == 200
    assert "paused by op" in s.get(node.url + "/console/jobs", timeout=10).text
    assert _act(node, s, csrf, "pause-destination", "nowhere").status_code == 409
    assert _act(node, s, csrf, "complete-study", WAITING).status_code == 200
    assert node.row("SELECT due_at FROM pending_studies WHERE study_uid=?", WAITING)["due_at"] <= time.time()
    assert _act(node, s, csrf, "complete-study", STUDY).status_code == 409  # not waiting
    assert _act(node, s, csrf, "reprocess-study", STUDY).status_code == 200
    assert node.row("SELECT state, generation FROM pending_studies WHERE study_uid=?", STUDY) == {
        "state": "waiting", "generation": 2}
    assert node.calls == ["wake_dispatch", f"complete {WAITING}", f"complete {STUDY}"]
    assert _act(node, s, csrf, "resume-destination", "pacs").status_code == 200
    done = [(r["actor"], r["action"], r["subject"], json.loads(r["detail"])["result"])
            for r in node.conns.get().execute("SELECT * FROM audit_events WHERE kind='operator' ORDER BY id")]
    assert done == [("op", "retry-job", str(ids["failed"]), "done"), ("op", "retry-job", str(ids["done"]), "refused"),
                    ("op", "abort-job", str(ids["queued"]), "done"),
                    ("op", "retry-delivery", str(ids["delivery"]), "done"),
                    ("op", "pause-destination", "pacs", "done"), ("op", "pause-destination", "nowhere", "refused"),
                    ("op", "complete-study", WAITING, "done"), ("op", "complete-study", STUDY, "refused"),
                    ("op", "reprocess-study", STUDY, "done"), ("op", "resume-destination", "pacs", "done")]


def test_a_paused_destination_sends_nothing_until_resumed(node: Node) -> None:
    store = ConsoleStore(node.conns.get)
    sent: list[int] = []

    class Sender:
        def send(self, paths):
            sent.append(len(paths))
            return []

    worker = DestinationWorker("pacs", Sender(), node.conns.get, _config(Path("/tmp")).dispatch, paused=store.is_paused)
    with node.conns.get() as conn:
        conn.execute("UPDATE deliveries SET state='pending', next_attempt_at=0")
    store.pause_destination("pacs", "op")
    assert worker.run_once() is False and sent == []
    store.resume_destination("pacs")
    assert worker.run_once() is True  # the row is due again (its file is missing, so it fails at once)


def test_admin_adds_a_user_who_can_log_in_and_cannot_remove_the_last_admin(node: Node) -> None:
    s, csrf = login(node, "boss")
    r = s.post(node.url + "/console/actions/user-add", timeout=10,
               data={"csrf": csrf, "target": "newop", "role": "operator", "password": "short"})
    assert r.status_code == 409 and "too short" in r.text
    r = s.post(node.url + "/console/actions/user-add", timeout=10,
               data={"csrf": csrf, "target": "newop", "role": "operator", "password": "a-long-password"})
    assert r.status_code == 200
    login(node, "newop", "a-long-password")
    r = s.post(node.url + "/console/actions/user-role", timeout=10,
               data={"csrf": csrf, "target": "boss", "role": "operator"})
    assert r.status_code == 409 and "last admin" in r.text
    audit = node.row("SELECT detail FROM audit_events "
                     "WHERE action='user-add' AND subject='newop' AND detail LIKE '%done%'")
    assert audit and "a-long-password" not in audit["detail"]


def test_password_change_ends_the_users_sessions(node: Node) -> None:
    s, _ = login(node, "reader")
    admin, csrf = login(node, "boss")
    r = admin.post(node.url + "/console/actions/user-password", timeout=10,
                   data={"csrf": csrf, "target": "reader", "password": "a-new-password"})
    assert r.status_code == 200
    assert s.get(node.url + "/console/studies", timeout=10, allow_redirects=False).status_code == 303


# ---------------------------------------------------------------------------------------------- API tokens
def test_api_tokens_keep_working_and_a_session_cookie_does_not_open_the_api(node: Node) -> None:
    s, _ = login(node, "boss")
    assert s.get(node.url + "/api/studies", timeout=10).status_code == 401
    r = requests.get(node.url + "/api/studies", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200 and r.json()["studies"]
    # and the API token is no console login
    r = requests.get(node.url + "/console/studies", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10,
                     allow_redirects=False)
    assert r.status_code == 303


# ---------------------------------------------------------------------------------------------- pages
def test_study_page_shows_counts_routes_and_why_jobs_deliveries_and_the_viewer_link(node: Node) -> None:
    s, _ = login(node, "op")
    html = s.get(node.url + f"/console/studies/{STUDY}", timeout=10).text
    assert "1 series, 3 instances" in html and "MODALITY" in html
    assert f"http://viewer.example/viewer?StudyInstanceUIDs={STUDY}" in html
    assert "Modality XA is not CT" in html  # why the ct route did not match
    assert "association rejected" in html and "input: no XA series" in html
    waiting = s.get(node.url + "/console/studies?state=waiting", timeout=10).text
    assert WAITING in waiting and STUDY not in waiting and re.search(r"\b(2[0-9]|30) s\b", waiting)
    assert s.get(node.url + "/console/studies/9.9.9", timeout=10).status_code == 404


def test_security_headers_on_pages(node: Node) -> None:
    s, _ = login(node, "reader")
    r = s.get(node.url + "/console/studies", timeout=10)
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"


# ---------------------------------------------------------------------------------------------- CLI
def _cli(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", "user", *args, "--set",
                           f"node.storage_dir={tmp_path / 'var'}"], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])


def test_user_cli_add_list_passwd_role_remove(tmp_path: Path) -> None:
    r = _cli(tmp_path, "add", "alice", "--role", "admin", "--password-stdin", stdin="alice-password-1\n")
    assert r.returncode == 0, r.stderr
    assert "alice added as admin" in r.stdout
    r = _cli(tmp_path, "add", "alice", "--role", "operator", "--password-stdin", stdin="alice-password-1\n")
    assert r.returncode == 1 and "exists already" in r.stderr
    r = _cli(tmp_path, "add", "bob", "--role", "read-only", "--password-stdin", stdin="short\n")
    assert r.returncode == 1 and "too short" in r.stderr
    r = _cli(tmp_path, "add", "bob", "--role", "read-only")  # no terminal, no --password-stdin
    assert r.returncode == 1 and "--password-stdin" in r.stderr
    added = _cli(tmp_path, "add", "bob", "--role", "read-only", "--password-stdin", stdin="bob-password-1\n")
    assert added.returncode == 0
    listed = _cli(tmp_path, "list").stdout
    assert re.search(r"alice\s+admin", listed) and re.search(r"bob\s+read-only", listed)
    conn = state.connect(tmp_path / "var")
    accounts = Accounts(ConsoleStore(lambda: conn))
    assert accounts.verify("bob", "bob-password-1") == "read-only"
    assert _cli(tmp_path, "passwd", "bob", "--password-stdin", stdin="bob-password-2\n").returncode == 0
    assert accounts.verify("bob", "bob-password-1") is None and accounts.verify("bob", "bob-password-2") == "read-only"
    assert _cli(tmp_path, "role", "bob", "operator").returncode == 0
    r = _cli(tmp_path, "remove", "alice")
    assert r.returncode == 1 and "last admin" in r.stderr
    assert _cli(tmp_path, "remove", "bob").returncode == 0
    assert accounts.verify("bob", "bob-password-2") is None
    assert (tmp_path / "var" / state.DB_FILENAME).stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------------------------------------- audit trail
def test_audit_events_cannot_be_changed_and_are_removed_per_retention(node: Node) -> None:
    from node.console.audit import AuditRecorder

    store = ConsoleStore(node.conns.get)
    old = store.audit("receive", "MODALITY", "received", STUDY, {"instances": 3}, at=time.time() - 40 * 86400)
    new = store.audit("receive", "MODALITY", "received", STUDY, {"instances": 1})
    with pytest.raises(Exception, match="append-only"):
        with node.conns.get() as conn:
            conn.execute("UPDATE audit_events SET actor='someone else' WHERE id=?", (new,))
    assert AuditRecorder(store).prune(keep_days=30) == 1
    ids = [r["id"] for r in node.conns.get().execute("SELECT id FROM audit_events")]
    assert old not in ids and new in ids


def test_audit_search_and_csv_json_export(node: Node) -> None:
    store = ConsoleStore(node.conns.get)
    store.audit("receive", "MODALITY", "received", STUDY, {"instances": 3, "association": "MODALITY -> CARDIONODE"})
    store.audit("routing", "node", "routed", STUDY, {"routes": "xa"})
    store.audit("receive", "OTHER_AE", "received", "1.2.3.4", {"instances": 1})
    s, _ = login(node, "reader")
    html = s.get(node.url + "/console/audit", params={"q": "MODALITY"}, timeout=10).text
    assert "MODALITY -&gt; CARDIONODE" in html and "OTHER_AE" not in html
    assert "OTHER_AE" not in s.get(node.url + "/console/audit", params={"kind": "routing"}, timeout=10).text
    r = s.get(node.url + "/console/audit", params={"q": STUDY, "format": "json"}, timeout=10)
    assert r.headers["content-disposition"].startswith("attachment")
    events = r.json()["events"]
    assert [e["action"] for e in events] == ["routed", "received"] and events[1]["detail"]["instances"] == 3
    r = s.get(node.url + "/console/audit", params={"q": STUDY, "format": "csv"}, timeout=10)
    lines = r.text.strip().splitlines()
    assert r.headers["content-type"].startswith("text/csv") and lines[0].startswith("id,time_utc,kind,actor")
    assert "audit export" in lines[1]  # the JSON export above, recorded (its query names the study)
    assert ",routing,node,routed," in lines[2] and ",receive,MODALITY,received," in lines[3] and len(lines) == 4
    # the export itself is recorded
    assert node.row("SELECT actor FROM audit_events WHERE action='audit export' ORDER BY id DESC")["actor"] == "reader"


def test_a_version_1_database_gets_the_console_tables_keeping_its_rows(tmp_path: Path) -> None:
    import sqlite3

    from node.state.schema import MIGRATIONS, migrate, schema_version

    tmp_path.mkdir(exist_ok=True)
    plain = sqlite3.connect(tmp_path / state.DB_FILENAME, isolation_level=None)
    plain.row_factory = sqlite3.Row
    migrate(plain, MIGRATIONS[:1])
    job = plain.execute("INSERT INTO jobs (study_uid, generation, route_name, pipeline, state, next_attempt_at,"
                        " created_at) VALUES (?, 1, 'xa', 'syntax', 'queued', 0, 0)", (STUDY,)).lastrowid
    plain.close()
    conn = state.connect(tmp_path)
    assert schema_version(conn) == state.SCHEMA_VERSION >= 2
    assert tuple(conn.execute("SELECT study_uid, priority FROM jobs WHERE id=?", (job,)).fetchone()) == (STUDY, 0)
    store = ConsoleStore(lambda: conn)
    event = store.audit("operator", "op", "retry-job", str(job))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_events SET actor='x' WHERE id=?", (event,))
    assert store.list_users() == [] and store.paused_destinations() == {}


def test_session_cookie_is_secure_under_http_tls(tmp_path: Path, users_db: Path) -> None:
    from starlette.testclient import TestClient

    from node.web.server import build_app

    (tmp_path / "var").mkdir(mode=0o700)
    (tmp_path / "var" / state.DB_FILENAME).write_bytes(users_db.read_bytes())
    config = parse_config({"node": {"storage_dir": str(tmp_path / "var"), "http_port": 0,
                                    "http_tls": {"certificate": "node.crt", "private_key": "node.key"}}})
    conns = Connections(config.node.storage_dir)
    try:
        client = TestClient(build_app(WebContext(config=config, get_conn=conns.get, metrics=Metrics(conns.get))),
                            base_url="https://node.example")
        page = client.get("/console/login")
        assert "Secure" in page.headers["set-cookie"]  # the login form's token cookie
        r = client.post("/console/login", data={"csrf": _csrf(page.text), "username": "op",
                                                 "password": PASSWORDS["op"]}, follow_redirects=False)
        assert r.status_code == 303
        session_cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith("cardionode_session=")]
        assert session_cookie and "Secure" in session_cookie[0] and "HttpOnly" in session_cookie[0]
    finally:
        conns.close_all()


def test_models_page_shows_manifest_training_data_evaluation_disclaimer_and_sha256(tmp_path: Path,
                                                                                    users_db: Path) -> None:
    from pipelines.runtime import ModelStore, bundled_models_dir

    from pipelines.runtime.settings import ModelsSection

    (tmp_path / "var").mkdir(mode=0o700)
    (tmp_path / "var" / state.DB_FILENAME).write_bytes(users_db.read_bytes())
    config = _config(tmp_path)
    conns = Connections(config.node.storage_dir)
    models = ModelStore([bundled_models_dir()], ModelsSection(providers=("cpu",), warmup=False))
    server = HttpServer(config, WebContext(config=config, get_conn=conns.get, metrics=Metrics(conns.get),
                                           model_store=models))
    server.start()
    try:
        node = Node(server, conns, {}, [])
        s, _ = login(node, "reader")
        html = s.get(node.url + "/console/models", timeout=30).text
        manifest = json.loads((bundled_models_dir() / "calcium-unet2d" / "manifest.json").read_text())
        assert "calcium-unet2d" in html and manifest["version"] in html and manifest["sha256"] in html
        assert "Trained on synthetic phantoms, not on patient data" in html
        metrics = manifest["provenance"]["metrics"]  # the evaluation figures the manifest carries, whichever they are
        assert metrics and all(key in html for key in metrics)
        assert "synthetic phantoms" in html  # training data
        assert "Reload models" not in html  # admin only
        admin, _ = login(node, "boss")
        assert "Reload models" in admin.get(node.url + "/console/models", timeout=30).text
    finally:
        server.stop()
        conns.close_all()

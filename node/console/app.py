"""The operator console: server-rendered pages (Starlette + Jinja2) under ``/console`` on the HTTP port.

Every page and action needs a login session (:mod:`node.console.accounts`); a request without one is
sent to the login page (GET) or refused with 401 (POST).  Every state-changing request is a POST
carrying the session's CSRF token (403 without it) and needs the role the action names (403 below it):

=====================  ==========  =================================================
action                 role        what it does
=====================  ==========  =================================================
retry-job              operator    failed job -> queued (attempts reset)
abort-job              operator    queued job -> failed ("aborted by <user>")
retry-delivery         operator    failed delivery -> pending, sent at once
pause-destination      operator    the destination's worker sends nothing until resumed
resume-destination     operator    sending resumes
complete-study         operator    a waiting study's quiet period ends now
reprocess-study        operator    a completed study is routed and run again (next generation)
reload-models          admin       new jobs use the models now installed
user-add/-remove/...   admin       accounts
=====================  ==========  =================================================

Each action is confirmed on its own page first and recorded in the audit trail (who, what, when).
The JSON API (``/api/*``) keeps its bearer tokens; the console does not open it to cookies.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import status as queries
from .accounts import AccountError, Accounts, Session
from ..routing import Router, facts_from_study
from ..state import InstanceIndex
from .store import ROLES, AuditQuery, ConsoleStore

if TYPE_CHECKING:  # node.web.server mounts the console: a runtime import would be a cycle
    from ..web.context import WebContext

__all__ = ["console_routes", "ACTIONS", "SESSION_COOKIE"]

log = logging.getLogger("cardionode.console")

SESSION_COOKIE = "cardionode_session"
LOGIN_COOKIE = "cardionode_login"  # double-submit CSRF token of the login form (no session yet)
MAX_FORM_BYTES = 64 * 1024
_TEMPLATES = Path(__file__).with_name("templates")

#: action -> (role needed, what the target is, label of the confirm button)
ACTIONS: dict[str, tuple[str, str, str]] = {
    "retry-job": ("operator", "job", "Retry job now"),
    "abort-job": ("operator", "job", "Abort job"),
    "retry-delivery": ("operator", "delivery", "Retry delivery now"),
    "pause-destination": ("operator", "destination", "Pause destination"),
    "resume-destination": ("operator", "destination", "Resume destination"),
    "complete-study": ("operator", "study", "Complete study now"),
    "reprocess-study": ("operator", "study", "Reprocess study"),
    "reload-models": ("admin", "models", "Reload models"),
    "user-add": ("admin", "user", "Add user"),
    "user-remove": ("admin", "user", "Remove user"),
    "user-password": ("admin", "user", "Set password"),
    "user-role": ("admin", "user", "Change role"),
}

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _fmt_time(t: float | None) -> str:
    if not t:
        return ""
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt_left(t: float | None) -> str:
    if not t:
        return ""
    left = t - time.time()
    return "due now" if left <= 0 else f"{left:.0f} s"


class _Form(dict[str, str]):
    """A urlencoded form body (one value per name, the first one)."""


async def _read_form(request: Request) -> _Form | None:
    """The form fields, or None when the body is too large or not urlencoded."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return None
    form = _Form()
    for k, v in pairs:
        form.setdefault(k, v)
    return form


def _safe_next(target: str | None) -> str:
    """Only a console path may follow a login (no open redirect)."""
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/studies"


def console_routes(ctx: WebContext, store: ConsoleStore, accounts: Accounts) -> list[Route]:
    """The console's routes; ``ctx`` is the HTTP port's :class:`~node.web.server.WebContext`."""
    env = Environment(loader=FileSystemLoader(str(_TEMPLATES)), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["time"] = _fmt_time
    env.filters["left"] = _fmt_left
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    config = ctx.config
    secure_cookie = config.node.http_tls is not None
    viewer_url = config.console.viewer_url
    router = Router(config)

    def render(request: Request, template: str, session: Session | None, status_code: int = 200,
               **values: Any) -> HTMLResponse:
        html = env.get_template(template).render(
            session=session, path=request.url.path, ae_title=config.node.ae_title, roles=ROLES, **values)
        return HTMLResponse(html, status_code=status_code, headers=_SECURITY_HEADERS)

    def refuse(request: Request, session: Session | None, status_code: int, message: str) -> HTMLResponse:
        return render(request, "error.html", session, status_code=status_code, message=message)

    def current(request: Request) -> Session | None:
        return accounts.session(request.cookies.get(SESSION_COOKIE))

    def page(role: str = "read-only") -> Callable[[Callable[..., Any]], Callable[[Request], Awaitable[Response]]]:
        """A GET page for ``role`` and above: no session -> login page, lower role -> 403."""

        def wrap(fn: Callable[..., Any]) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                session = await run_in_threadpool(current, request)
                if session is None:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse("/console/login?" + urllib.parse.urlencode({"next": target}),
                                            status_code=303, headers=_SECURITY_HEADERS)
                if not session.may(role):
                    return refuse(request, session, 403, f"this page needs the role {role}; you are {session.role}")
                return await run_in_threadpool(fn, request, session)

            endpoint.__name__ = fn.__name__
            return endpoint

        return wrap

    # ------------------------------------------------------------------ login / logout
    async def login_page(request: Request) -> Response:
        import secrets

        if await run_in_threadpool(current, request) is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
        token = secrets.token_urlsafe(24)
        response = render(request, "login.html", None, csrf=token, next=_safe_next(request.query_params.get("next")),
                          error=None)
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookie,
                            path="/console/login", max_age=3600)
        return response

    async def login_submit(request: Request) -> Response:
        form = await _read_form(request)
        cookie = request.cookies.get(LOGIN_COOKIE)
        if form is None or not cookie or not Accounts.csrf_ok(Session("", "", cookie, 0), form.get("csrf")):
            return refuse(request, None, 403, "the login form expired or was not sent from this console; "
                                               "reload the login page")
        username = form.get("username", "").strip()
        role = await run_in_threadpool(accounts.verify, username, form.get("password", ""))
        client = request.client.host if request.client else ""
        if role is None:
            await run_in_threadpool(store.audit, "login", username or "(empty)", "login refused", None,
                                    {"client": client})
            return render(request, "login.html", None, status_code=401, csrf=cookie,
                          next=_safe_next(form.get("next")), error="wrong user name or password")
        token, session = await run_in_threadpool(accounts.open_session, username)
        await run_in_threadpool(store.audit, "login", username, "login", None, {"client": client, "role": role})
        response = RedirectResponse(_safe_next(form.get("next")), status_code=303, headers=_SECURITY_HEADERS)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookie,
                            path="/console", max_age=int(accounts.session_s))
        response.delete_cookie(LOGIN_COOKIE, path="/console/login")
        return response

    async def logout(request: Request) -> Response:
        session = await run_in_threadpool(current, request)
        if session is None:
            return refuse(request, None, 401, "not logged in")
        form = await _read_form(request)
        if form is None or not accounts.csrf_ok(session, form.get("csrf")):
            return refuse(request, session, 403, "missing or wrong CSRF token")
        await run_in_threadpool(accounts.close_session, request.cookies.get(SESSION_COOKIE))
        await run_in_threadpool(store.audit, "login", session.username, "logout")
        response = RedirectResponse("/console/login", status_code=303, headers=_SECURITY_HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    async def root(request: Request) -> Response:
        return RedirectResponse("/console/studies", status_code=303)

    # ------------------------------------------------------------------ pages
    @page()
    def studies_page(request: Request, session: Session) -> Response:
        state = request.query_params.get("state") or None
        if state is not None and state not in queries.STUDY_STATES:
            state = None
        conn = ctx.get_conn()
        rows = queries.studies(conn, 500, state)
        counts = queries.counts(conn)["studies"]
        return render(request, "studies.html", session, studies=rows, state=state, states=queries.STUDY_STATES,
                      counts=counts, total=sum(counts.values()))

    @page()
    def study_page(request: Request, session: Session) -> Response:
        uid = request.path_params["uid"]
        conn = ctx.get_conn()
        found = [s for s in queries.studies(conn, 100_000) if s["study_uid"] == uid]
        jobs = queries.jobs(conn, 1000, study_uid=uid)
        if not found and not jobs:
            return refuse(request, session, 404, f"study {uid} is not known to this node")
        study = found[0] if found else {"study_uid": uid, "routes": [], "state": "unknown"}
        counts = store.study_counts(uid)
        job_ids = [j["id"] for j in jobs]
        results = store.results(job_ids)
        for r in results:
            r["kind"] = _sop_class_name(r.get("sop_class_uid"))
        deliveries = store.deliveries(job_ids)
        viewer = viewer_url.replace("{study_uid}", urllib.parse.quote(uid, safe="")) if viewer_url else None
        recorded = set(study.get("routes") or [])
        view = InstanceIndex(ctx.get_conn()).study_view(uid)
        routes = [{"name": e.name, "pipeline": e.pipeline, "destinations": list(e.destinations),
                   "priority": e.priority, "matched": e.name in recorded, "would_match_now": e.matches, "why": e.why}
                  for e in router.explain(facts_from_study(view, router.keywords))]
        events = store.search_audit(AuditQuery(text=uid, limit=200))
        return render(request, "study.html", session, study=study, counts=counts, jobs=jobs, results=results,
                      deliveries=deliveries, viewer=viewer, routes=routes, events=events)

    @page()
    def jobs_page(request: Request, session: Session) -> Response:
        conn = ctx.get_conn()
        state = request.query_params.get("state") or None
        paused = store.paused_destinations()
        destinations = queries.destinations(conn, config)
        for d in destinations:
            d["paused"] = paused.get(d["name"])
        return render(request, "jobs.html", session, jobs=queries.jobs(conn, 300, state), state=state,
                      destinations=destinations, failed_deliveries=store.failed_deliveries(),
                      notifications=store.recent_notifications(), webhooks=sorted(config.notifications.webhooks),
                      executor=queries.executor(conn, config), job_counts=queries.counts(conn).get("jobs", {}))

    @page()
    def models_page(request: Request, session: Session) -> Response:
        return render(request, "models.html", session, models=_models(ctx))

    @page()
    def audit_page(request: Request, session: Session) -> Response:
        q = request.query_params
        limit = q.get("limit") or "500"
        query = AuditQuery(text=q.get("q", ""), kind=q.get("kind", ""), since=_day(q.get("since")),
                           until=_day(q.get("until"), end=True), limit=int(limit) if limit.isdigit() else 500)
        fmt = q.get("format", "html")
        if fmt in ("csv", "json"):
            query.limit = 100_000
            events = store.search_audit(query)
            store.audit("operator", session.username, "audit export", None,
                        {"format": fmt, "query": q.get("q", ""), "kind": q.get("kind", ""), "events": len(events)})
            name = f"cardionode-audit-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.{fmt}"
            headers = {**_SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
            if fmt == "json":
                return JSONResponse({"events": events}, headers=headers)
            return Response(_csv(events), media_type="text/csv; charset=utf-8", headers=headers)
        events = store.search_audit(query)
        return render(request, "audit.html", session, events=events, q=q.get("q", ""), kind=q.get("kind", ""),
                      since=q.get("since", ""), until=q.get("until", ""),
                      kinds=("receive", "routing", "job", "delivery", "operator", "login"),
                      export_query=urllib.parse.urlencode({k: v for k, v in q.items() if k != "format"}))

    @page("admin")
    def users_page(request: Request, session: Session) -> Response:
        return render(request, "users.html", session, users=accounts.list())

    # ------------------------------------------------------------------ actions: confirm, then do
    @page()
    def confirm_page(request: Request, session: Session) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            return refuse(request, session, 404, f"no action {action!r}")
        role, kind, label = ACTIONS[action]
        if not session.may(role):
            return refuse(request, session, 403, f"{label.lower()} needs the role {role}; you are {session.role}")
        target = request.query_params.get("target", "")
        return render(request, "confirm.html", session, action=action, label=label, kind=kind, target=target,
                      describe=_describe(ctx, store, kind, target), back=_safe_next(request.query_params.get("back")))

    async def do_action(request: Request) -> Response:
        action = request.path_params["action"]
        session = await run_in_threadpool(current, request)
        if session is None:
            return refuse(request, None, 401, "not logged in: log in first")
        form = await _read_form(request)
        if form is None or not accounts.csrf_ok(session, form.get("csrf")):
            return refuse(request, session, 403, "missing or wrong CSRF token: reload the page and try again")
        if action not in ACTIONS:
            return refuse(request, session, 404, f"no action {action!r}")
        role, kind, label = ACTIONS[action]
        if not session.may(role):
            await run_in_threadpool(store.audit, "operator", session.username, f"{action} refused",
                                    form.get("target"), {"reason": f"role {session.role}, needs {role}"})
            return refuse(request, session, 403, f"{label.lower()} needs the role {role}; you are {session.role}")
        target = form.get("target") or None
        study = await run_in_threadpool(_study_of, store, kind, target or "")  # before: abort changes nothing here
        why, message = await run_in_threadpool(_perform, ctx, store, accounts, session, action, form)
        detail = {"result": "refused", "reason": why} if why else {"result": "done"}
        if study:
            detail["study"] = study  # the study page's audit list and a search by Study UID find it
        await run_in_threadpool(store.audit, "operator", session.username, action, target, detail)
        if why:
            return refuse(request, session, 409, f"{label}: {why}")
        return render(request, "done.html", session, message=message, back=_safe_next(form.get("back")))

    return [
        Route("/", root, methods=["GET"]),
        Route("/console", root, methods=["GET"]),
        Route("/console/", root, methods=["GET"]),
        Route("/console/login", login_page, methods=["GET"]),
        Route("/console/login", login_submit, methods=["POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Route("/console/studies", studies_page, methods=["GET"]),
        Route("/console/studies/{uid}", study_page, methods=["GET"]),
        Route("/console/jobs", jobs_page, methods=["GET"]),
        Route("/console/models", models_page, methods=["GET"]),
        Route("/console/audit", audit_page, methods=["GET"]),
        Route("/console/users", users_page, methods=["GET"]),
        Route("/console/confirm/{action}", confirm_page, methods=["GET"]),
        Route("/console/actions/{action}", do_action, methods=["POST"]),
    ]


def _sop_class_name(uid: str | None) -> str:
    """'Comprehensive 3D SR Storage' for its UID (pydicom's dictionary), else the UID."""
    if not uid:
        return ""
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else uid


def _day(text: str | None, end: bool = False) -> float | None:
    """``YYYY-MM-DD`` (UTC) as a timestamp; ``end`` gives the end of that day."""
    if not text:
        return None
    try:
        day = dt.datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    return (day + dt.timedelta(days=1 if end else 0)).timestamp()


def _csv(events: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "time_utc", "kind", "actor", "action", "subject", "detail"])
    for e in events:
        writer.writerow([e["id"], _fmt_time(e["at"]), e["kind"], e["actor"], e["action"], e["subject"] or "",
                         json.dumps(e["detail"], sort_keys=True) if e["detail"] else ""])
    return out.getvalue()


def _models(ctx: WebContext) -> list[dict[str, Any]]:
    """What the model store says, with each model's manifest (training data, evaluation, disclaimer)."""
    store = ctx.model_store
    described = queries.models(store) or []
    if isinstance(described, dict):
        described = [dict(v, name=k) for k, v in described.items()]
    out = []
    for row in described:
        row = dict(row)
        manifest = None
        source = row.get("source")
        path = Path(source) / "manifest.json" if isinstance(source, str) else None
        if path is not None and path.is_file():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = None
        row["manifest_doc"] = manifest
        out.append(row)
    return out


def _study_of(store: ConsoleStore, kind: str, target: str) -> str | None:
    """The study a job or delivery belongs to (None for other targets)."""
    if kind in ("job", "delivery") and target.isdigit():
        row = store.job(int(target)) if kind == "job" else store.delivery(int(target))
        return row.get("study_uid") if row else None
    return None


def _describe(ctx: WebContext, store: ConsoleStore, kind: str, target: str) -> str:
    """One line saying what the confirmed action will act on."""
    if kind == "job" and target.isdigit():
        row = store.job(int(target))
        if row is not None:
            return f"job {target}: {row['pipeline']} on study {row['study_uid']} (now {row['state']})"
    if kind == "delivery" and target.isdigit():
        row = store.delivery(int(target))
        if row is not None:
            return (f"delivery {target}: {row['sop_instance_uid']} to {row['destination']} (now {row['state']}:"
                    f" {row['last_error'] or 'no error'})")
    if kind == "destination":
        return f"destination {target}"
    if kind == "study":
        return f"study {target}"
    if kind == "models":
        return "reload every model from its folder; jobs already running keep the model they started with"
    return f"{kind} {target}".strip()


def _perform(ctx: WebContext, store: ConsoleStore, accounts: Accounts, session: Session, action: str,
             form: dict[str, str]) -> tuple[str | None, str]:
    """Carry out one confirmed action: (why it was refused | None, what was done)."""
    target = (form.get("target") or "").strip()
    if action in ("retry-job", "abort-job", "retry-delivery") and not target.isdigit():
        return f"{target!r} is not a number", ""
    if action == "retry-job":
        why = ctx.retry_job(int(target)) if ctx.retry_job is not None else store.retry_job(int(target))
        return why, f"job {target} queued again"
    if action == "abort-job":
        why = store.abort_job(int(target), f"aborted by {session.username} in the console")
        return why, f"job {target} aborted"
    if action == "retry-delivery":
        why = store.retry_delivery(int(target))
        if why is None and ctx.wake_dispatch is not None:
            ctx.wake_dispatch()
        return why, f"delivery {target} will be sent again now"
    if action in ("pause-destination", "resume-destination"):
        if target not in ctx.config.destinations:
            return f"no destination {target!r}", ""
        if action == "pause-destination":
            changed = store.pause_destination(target, session.username)
            return (None if changed else "already paused"), f"destination {target} paused"
        changed = store.resume_destination(target)
        if changed and ctx.wake_dispatch is not None:
            ctx.wake_dispatch()
        return (None if changed else "not paused"), f"destination {target} resumed"
    if action == "complete-study":
        if ctx.complete_study is None:
            return "completion is not running in this process", ""
        why = store.make_due_now(target)
        if why is None:
            ctx.complete_study(target)
        return why, f"study {target} completed now"
    if action == "reprocess-study":
        if ctx.complete_study is None:
            return "completion is not running in this process", ""
        why, generation = store.reopen_study(target)
        if why is None:
            ctx.complete_study(target)
        return why, f"study {target} routed again as generation {generation}"
    if action == "reload-models":
        if ctx.reload_models is None:
            return "no model store in this process", ""
        ctx.reload_models()
        return None, "models reloaded"
    try:
        if action == "user-add":
            accounts.add(target, form.get("role", ""), form.get("password", ""))
            return None, f"user {target} added as {form.get('role')}"
        if action == "user-remove":
            if target == session.username:
                return "you cannot remove yourself", ""
            accounts.remove(target)
            return None, f"user {target} removed"
        if action == "user-password":
            accounts.set_password(target, form.get("password", ""))
            return None, f"password of {target} set; their sessions ended"
        if action == "user-role":
            accounts.set_role(target, form.get("role", ""))
            return None, f"{target} is now {form.get('role')}"
    except AccountError as exc:
        return str(exc), ""
    return f"no action {action!r}", ""

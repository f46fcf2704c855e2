"""Read-only status API (JSON, bearer token) plus one action: retry a failed job.

GET  /api/studies[?state=&limit=]        studies known to completion
GET  /api/studies/{uid}                  one study with its jobs
GET  /api/jobs[?state=&study=&limit=]    jobs with state, attempts, error, versions
GET  /api/jobs/{id}                      one job
POST /api/jobs/{id}/retry                failed -> queued (attempts reset); 409 unless failed
GET  /api/destinations                   queue depth, sent/failed counts, last error
GET  /api/models                         models with versions (from the model store)

The queries are those of :mod:`node.status`, shared with ``cardionode status``.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import status as queries
from ..state import Jobs

if TYPE_CHECKING:
    from .context import WebContext

__all__ = ["status_routes"]

_MAX_LIMIT = 1000


def _limit(request: Request) -> int:
    try:
        return max(1, min(_MAX_LIMIT, int(request.query_params.get("limit", "50"))))
    except ValueError:
        return 50


def status_routes(ctx: WebContext, guard: Callable[[Request], Response | None]) -> list[Route]:
    """Routes of the status API; ``guard(request)`` returns a 401 response or None."""

    def protected(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            denied = guard(request)
            if denied is not None:
                return denied
            return await run_in_threadpool(fn, request)

        endpoint.__name__ = fn.__name__
        return endpoint

    def list_studies(request: Request) -> Response:
        conn = ctx.get_conn()
        return JSONResponse({"studies": queries.studies(conn, _limit(request), request.query_params.get("state"))})

    def one_study(request: Request) -> Response:
        conn = ctx.get_conn()
        uid = request.path_params["uid"]
        found = [s for s in queries.studies(conn, _MAX_LIMIT) if s["study_uid"] == uid]
        jobs = queries.jobs(conn, _MAX_LIMIT, study_uid=uid)
        if not found and not jobs:
            return JSONResponse({"error": f"study {uid} not known"}, status_code=404)
        return JSONResponse({"study": found[0] if found else {"study_uid": uid}, "jobs": jobs})

    def list_jobs(request: Request) -> Response:
        conn = ctx.get_conn()
        q = request.query_params
        return JSONResponse({"jobs": queries.jobs(conn, _limit(request), q.get("state"), q.get("study"))})

    def one_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        conn = ctx.get_conn()
        row = Jobs(ctx.get_conn).get(job_id)
        if row is not None:
            for job in queries.jobs(conn, _MAX_LIMIT, study_uid=row["study_uid"]):
                if job["id"] == job_id:
                    return JSONResponse({"job": job})
        return JSONResponse({"error": f"job {job_id} not found"}, status_code=404)

    def retry_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if Jobs(ctx.get_conn).get(job_id) is None:
            return JSONResponse({"error": f"job {job_id} not found"}, status_code=404)
        custom = ctx.retry_job
        why = custom(job_id) if custom is not None else Jobs(ctx.get_conn).retry_failed(job_id, time.time())
        if why == "not found":
            return JSONResponse({"error": f"job {job_id} not found"}, status_code=404)
        if why is not None:
            return JSONResponse({"error": f"job {job_id} cannot be retried: {why}"}, status_code=409)
        wake = ctx.wake_jobs
        if wake is not None and custom is None:
            wake()
        return JSONResponse({"job": job_id, "state": "queued"}, status_code=202)

    def list_destinations(request: Request) -> Response:
        return JSONResponse({"destinations": queries.destinations(ctx.get_conn(), ctx.config)})

    def list_models(request: Request) -> Response:
        return JSONResponse({"models": queries.models(ctx.model_store)})

    return [
        Route("/api/studies", protected(list_studies), methods=["GET"]),
        Route("/api/studies/{uid}", protected(one_study), methods=["GET"]),
        Route("/api/jobs", protected(list_jobs), methods=["GET"]),
        Route("/api/jobs/{job_id:int}", protected(one_job), methods=["GET"]),
        Route("/api/jobs/{job_id:int}/retry", protected(retry_job), methods=["POST"]),
        Route("/api/destinations", protected(list_destinations), methods=["GET"]),
        Route("/api/models", protected(list_models), methods=["GET"]),
    ]

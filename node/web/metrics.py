"""Prometheus metrics of one node, in a registry the service owns (never the global default).

Two kinds of series:

* event counters/histograms, incremented by whoever sees the event:
  ``metrics.instance_received(source, nbytes)`` after an instance is durably
  stored (STOW-RS counts its own with source="stow"; DIMSE ingest should call
  it with source="dimse"), and ``metrics.job_finished(pipeline, state,
  latency_s, run_s)`` when a job reaches done/failed (``metrics.job_hook(get_conn)``
  is a ready-made ``JobRunner(on_job_finished=...)`` callable), and
  ``metrics.study_completed()`` when a complete study was routed to jobs;
* series read from the node database at scrape time, so they are exact and
  survive restarts: jobs by state, deliveries by destination and state, and
  dispatch failures (failed delivery attempts per destination);
* the executor's state at scrape time (``metrics.watch_executor(status)``):
  ``cardionode_executor_up`` (0 while Ray is unreachable: jobs wait queued),
  seconds since it last changed, and workers configured / ready per pipeline.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..state import Deliveries, Jobs

if TYPE_CHECKING:
    from ..executors import ExecutorStatus
    from ..jobs import Job

__all__ = ["Metrics", "JOB_STATES", "CONTENT_TYPE_LATEST"]

log = logging.getLogger("cardionode.metrics")

JOB_STATES = ("queued", "running", "done", "failed")
_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))


class _DbCollector(Collector):
    """Gauges computed from the node database when /metrics is scraped."""

    def __init__(self, get_conn: Callable[[], sqlite3.Connection]) -> None:
        self._jobs = Jobs(get_conn)
        self._deliveries = Deliveries(get_conn)

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily("cardionode_jobs", "Pipeline jobs by state", labels=["state"])
        counts = {**{state: 0 for state in JOB_STATES}, **self._jobs.count_by_state()}
        for state, n in counts.items():
            jobs.add_metric([state], n)
        yield jobs
        queue = GaugeMetricFamily(
            "cardionode_dispatch_queue", "Result deliveries by destination and state", labels=["destination", "state"]
        )
        for destination, state, n in self._deliveries.count_by_destination_and_state():
            queue.add_metric([destination, state], n)
        yield queue
        failures = CounterMetricFamily(
            "cardionode_dispatch_failures", "Failed delivery attempts by destination", labels=["destination"]
        )
        for destination, n in self._deliveries.failed_attempts_by_destination():
            failures.add_metric([destination], n)
        yield failures

    def describe(self) -> Iterable[Metric]:
        return []


class _ExecutorCollector(Collector):
    """Gauges from the executor's current status (``ExecutorStatus``) when /metrics is scraped."""

    def __init__(self, status: Callable[[], ExecutorStatus]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        st = self._status()
        up = GaugeMetricFamily("cardionode_executor_up",
                               "1 when the executor can take jobs; 0 while it cannot (jobs wait queued)",
                               labels=["executor", "state"])
        up.add_metric([st.kind, st.state], 1 if st.available else 0)
        yield up
        since = GaugeMetricFamily("cardionode_executor_state_seconds",
                                  "Seconds since the executor became available / unavailable", labels=["executor"])
        since.add_metric([st.kind], max(0.0, time.time() - st.since))
        yield since
        workers = GaugeMetricFamily("cardionode_executor_workers", "Remote workers per pipeline",
                                    labels=["pipeline", "state"])
        for group in st.groups:
            workers.add_metric([group.pipeline, "configured"], group.configured)
            workers.add_metric([group.pipeline, "ready"], group.ready)
        yield workers

    def describe(self) -> Iterable[Metric]:
        return []


class Metrics:
    """The node's metrics; one object per service, passed to the components that count."""

    def __init__(self, get_conn: Callable[[], sqlite3.Connection] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.instances = Counter(
            "cardionode_instances_received", "SOP instances stored in the spool", ["source"], registry=r
        )
        self.bytes = Counter("cardionode_received_bytes", "Bytes of instances stored in the spool", ["source"],
                             registry=r)
        self.studies = Counter(
            "cardionode_studies_completed", "Studies completed (quiet period over) and routed to jobs", registry=r
        )
        self.jobs_finished = Counter(
            "cardionode_jobs_finished", "Jobs that reached a final state", ["pipeline", "state"], registry=r
        )
        self.job_latency = Histogram(
            "cardionode_job_latency_seconds",
            "Job creation (study complete) to final state, by pipeline",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.job_run = Histogram(
            "cardionode_job_run_seconds",
            "Last attempt's run time (start to final state), by pipeline",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.own_results = Counter(
            "cardionode_own_results_returned", "The node's own results sent back to it (not stored)", ["source"],
            registry=r,
        )
        self.stow_requests = Counter(
            "cardionode_stow_requests", "STOW-RS requests by HTTP status", ["status"], registry=r
        )
        if get_conn is not None:
            r.register(_DbCollector(get_conn))

    # -------------------------------------------------------------- events
    def instance_received(self, source: str, nbytes: int) -> None:
        self.instances.labels(source=source).inc()
        self.bytes.labels(source=source).inc(max(0, nbytes))

    def own_result_returned(self, source: str) -> None:
        self.own_results.labels(source=source).inc()

    def study_completed(self, n: int = 1) -> None:
        self.studies.inc(n)

    def job_finished(self, pipeline: str, state: str, latency_s: float | None = None,
                     run_s: float | None = None) -> None:
        self.jobs_finished.labels(pipeline=pipeline, state=state).inc()
        if latency_s is not None:
            self.job_latency.labels(pipeline=pipeline).observe(max(0.0, latency_s))
        if run_s is not None:
            self.job_run.labels(pipeline=pipeline).observe(max(0.0, run_s))

    def watch_executor(self, status: Callable[[], ExecutorStatus]) -> None:
        """Export the executor's state; ``status()`` returns a :class:`node.executors.ExecutorStatus`."""
        self.registry.register(_ExecutorCollector(status))

    def stow_request(self, status: int) -> None:
        self.stow_requests.labels(status=str(status)).inc()

    def job_hook(self, get_conn: Callable[[], sqlite3.Connection]) -> Callable[[Job, str], None]:
        """A ``(job, state)`` callable for ``JobRunner(on_job_finished=...)``: reads the job's times from the DB."""

        jobs = Jobs(get_conn)

        def hook(job: Job, state: str) -> None:
            if state not in ("done", "failed"):
                return  # re-queued after a transient error: not final
            row = jobs.get(job.id)
            if row is None or row["finished_at"] is None:
                self.job_finished(job.pipeline, state)
                return
            run_s = row["finished_at"] - row["started_at"] if row["started_at"] is not None else None
            self.job_finished(row["pipeline"], state, row["finished_at"] - row["created_at"], run_s)

        return hook

    # -------------------------------------------------------------- exposition
    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Current value of one sample (tests, status): e.g. value("cardionode_instances_received_total", {...})."""
        return self.registry.get_sample_value(name, labels or {})

"""Pull on demand: fetch a study that is already in the PACS and run it through the node's routing.

``cardionode process --study UID --from SOURCE`` (see :func:`register`) does:

1. retrieve every instance of the study from ``sources.SOURCE`` into the spool
   (``source="retrieve"``, calling AE = the source name), each one validated and
   fsynced exactly like a received instance:

   * DICOMweb source: WADO-RS ``retrieve study`` with dicomweb-client;
   * DIMSE source, ``retrieve: get``: C-GET, we are SCU and storage SCP on the
     same association (no network configuration needed at the PACS);
   * DIMSE source, ``retrieve: move``: C-MOVE to our own AE title
     (``node.ae_title``; the PACS must know it with our host and ``node.port``).
     When that port is free we listen on it for the duration of the move;
     when the node is running there, its DIMSE listener receives the
     instances and the node completes the study itself after its quiet period.

2. mark the study complete now (quiet period 0) through
   :class:`node.completion.CompletionTracker`, which routes it and enqueues
   one job per matching route in the node database.  A running node's job
   workers pick the jobs up; ``--wait`` polls until they finish.  A study
   processed before is processed again (new generation) -- the operator asked.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    RLELossless,
)

from .config import DicomwebSource, DimseSource, NodeConfig
from .spool import OwnResultError, Spool, StoredInstance

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from pipelines.base import StudyView

    from .state import Connections, OwnResults

__all__ = [
    "RetrieveError",
    "RetrieveResult",
    "retrieve_study",
    "store_dataset",
    "complete_study_now",
    "register",
    "add_arguments",
    "cmd_process_study",
    "process_study_main",
]

log = logging.getLogger("cardionode.retrieve")

#: Transfer syntaxes offered for C-GET storage sub-operations (the spool keeps what it gets).
_STORE_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEG2000Lossless, JPEG2000, RLELossless,
]


class RetrieveError(Exception):
    """The study could not be retrieved (source unknown or unreachable, nothing found, refused)."""


@dataclasses.dataclass
class RetrieveResult:
    study_uid: str
    source: str
    method: str
    stored: int = 0
    failed: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    own_results: int = 0  # the node's own results found in the study: not stored
    delivered_to_node: bool = False  # C-MOVE received by the running node's own listener

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def store_dataset(spool: Spool, ds: Dataset, calling_ae: str, source: str = "retrieve") -> StoredInstance:
    """Encode a retrieved dataset as Part 10 and store it like a received instance."""
    from .web.stow import read_part_meta

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    meta, offset = read_part_meta(buf)
    buf.seek(offset)
    return spool.store_stream(meta, buf, calling_ae=calling_ae, source=source)


# --------------------------------------------------------------------------- WADO-RS


def _retrieve_wado(name: str, src: DicomwebSource, study_uid: str, spool: Spool, timeout_s: float,
                   on_stored: Callable[[int], None] | None) -> RetrieveResult:
    import requests

    from .dispatch.dicomweb import make_client

    result = RetrieveResult(study_uid, name, "wado-rs")
    client = make_client(src.url, src.auth, src.verify_tls, timeout_s)
    try:
        for ds in client.iter_study(study_uid):
            try:
                stored = store_dataset(spool, ds, calling_ae=name)
            except OwnResultError:
                result.own_results += 1
                continue
            except Exception as exc:  # one bad instance does not stop the study
                result.failed += 1
                result.errors.append(f"{ds.get('SOPInstanceUID', '?')}: {exc}")
                continue
            result.stored += 1
            if on_stored is not None:
                on_stored(stored.size)
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else 0
        if code == 404:
            raise RetrieveError(f"study {study_uid} not found at source {name!r} ({src.url})") from exc
        raise RetrieveError(f"WADO-RS from {name!r} failed: HTTP {code}") from exc
    except requests.RequestException as exc:
        raise RetrieveError(f"cannot reach source {name!r} at {src.url}: {exc}") from exc
    return result


# --------------------------------------------------------------------------- DIMSE


def _store_handler(spool: Spool, calling_ae: str, result: RetrieveResult,
                   on_stored: Callable[[int], None] | None) -> Callable[[Event], int]:
    """EVT_C_STORE handler for C-GET / C-MOVE sub-operations: same storing and statuses as the listener."""
    from .ingest.dimse import store_event, status_for_error

    def handle(event: Event) -> int:
        try:
            stored = store_event(spool, event, calling_ae=calling_ae, source="retrieve")
        except OwnResultError:
            result.own_results += 1
            return 0x0000
        except Exception as exc:
            result.failed += 1
            sop_uid = str(cast(C_STORE, event.request).AffectedSOPInstanceUID)  # EVT_C_STORE's request
            result.errors.append(f"{sop_uid}: {exc}")
            log.warning("retrieved instance refused", extra={"sop_instance": sop_uid, "source": calling_ae,
                                                             "error": str(exc)})
            return status_for_error(exc)
        result.stored += 1
        if on_stored is not None:
            on_stored(stored.size)
        return 0x0000

    return handle


def _identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def _final_status(responses: Iterable[tuple[Any, Any]], what: str, name: str) -> tuple[int, int]:
    """Consume C-GET/C-MOVE responses; returns (final status, failed sub-operations)."""
    status_code, failed = None, 0
    for status, _identifier_ds in responses:
        if not status or "Status" not in status:
            raise RetrieveError(f"{what} to {name!r}: no response (timeout or association aborted)")
        status_code = int(status.Status)
        failed = int(status.get("NumberOfFailedSuboperations", failed) or 0)
    if status_code is None:
        raise RetrieveError(f"{what} to {name!r}: no response")
    return status_code, failed


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _retrieve_dimse(name: str, src: DimseSource, study_uid: str, spool: Spool, config: NodeConfig,
                    timeout_s: float, on_stored: Callable[[int], None] | None) -> RetrieveResult:
    from pynetdicom import AE, StoragePresentationContexts, build_role, evt
    from pynetdicom.events import EventHandlerType
    from pynetdicom.pdu_primitives import _UI
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import, not in the stubs
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )

    our_ae = config.node.ae_title
    result = RetrieveResult(study_uid, name, "c-" + src.retrieve)
    handler = _store_handler(spool, name, result, on_stored)
    ae = AE(ae_title=our_ae)
    for attr in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, attr, timeout_s)
    scp = None
    if src.retrieve == "get":
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        storage = [cx.abstract_syntax for cx in StoragePresentationContexts if cx.abstract_syntax][:127]
        roles: list[_UI] = []
        for uid in storage:
            ae.add_requested_context(uid, _STORE_SYNTAXES)
            roles.append(build_role(uid, scp_role=True))
        handlers: list[EventHandlerType] = [(evt.EVT_C_STORE, handler)]
        assoc = ae.associate(src.host, src.port, ae_title=src.ae_title, ext_neg=roles, evt_handlers=handlers)
    else:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        host, port = config.node.host, config.node.port
        if _port_free(host, port):
            for cx in StoragePresentationContexts:
                if cx.abstract_syntax:  # always set on pynetdicom's prebuilt contexts
                    ae.add_supported_context(cx.abstract_syntax, _STORE_SYNTAXES)
            ae.require_called_aet = True
            scp = ae.start_server((host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)])
        else:
            result.delivered_to_node = True
            log.info("port in use: C-MOVE sub-operations go to the running node's listener",
                     extra={"host": host, "port": port})
        assoc = ae.associate(src.host, src.port, ae_title=src.ae_title)
    try:
        if not assoc.is_established:
            raise RetrieveError(f"no association with source {name!r} ({src.ae_title}@{src.host}:{src.port})")
        try:
            if src.retrieve == "get":
                responses = assoc.send_c_get(_identifier(study_uid), StudyRootQueryRetrieveInformationModelGet)
                status, failed = _final_status(responses, "C-GET", name)
            else:
                responses = assoc.send_c_move(_identifier(study_uid), our_ae,
                                              StudyRootQueryRetrieveInformationModelMove)
                status, failed = _final_status(responses, "C-MOVE", name)
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        if scp is not None:
            scp.shutdown()
    if status not in (0x0000, 0xB000):
        raise RetrieveError(f"{result.method.upper()} from {name!r} ended with status 0x{status:04X}"
                            f" ({failed} failed sub-operations)")
    if failed and not result.failed:
        result.failed = failed
    return result


# --------------------------------------------------------------------------- entry points


def retrieve_study(config: NodeConfig, source_name: str, study_uid: str, spool: Spool, timeout_s: float = 60.0,
                   on_stored: Callable[[int], None] | None = None) -> RetrieveResult:
    """Retrieve every instance of ``study_uid`` from ``sources[source_name]`` into ``spool``."""
    src = config.sources.get(source_name)
    if src is None:
        allowed = ", ".join(sorted(config.sources)) or "none configured"
        raise RetrieveError(f"unknown source {source_name!r} (configured: {allowed})")
    if isinstance(src, DicomwebSource):
        result = _retrieve_wado(source_name, src, study_uid, spool, timeout_s, on_stored)
    else:
        result = _retrieve_dimse(source_name, src, study_uid, spool, config, timeout_s, on_stored)
    if result.stored == 0 and not result.delivered_to_node:
        detail = f": {result.errors[0]}" if result.errors else ""
        raise RetrieveError(f"no instance of study {study_uid} could be retrieved from {source_name!r}{detail}")
    log.info("study retrieved", extra={"study": study_uid, "source": source_name, "method": result.method,
                                       "stored": result.stored, "failed": result.failed})
    return result


def complete_study_now(config: NodeConfig, conns: Connections, load_study: Callable[[str], StudyView],
                       study_uid: str) -> list[int]:
    """Route the (now complete) study at once and enqueue its jobs; returns the new job ids."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from .completion import CompletionTracker
    from .routing import Router

    tracker = CompletionTracker(conns.get, Router(config), load_study, BackgroundScheduler(timezone="UTC"),
                                late_arrivals="reprocess")
    tracker.arrived(study_uid, 0.0)
    return tracker.fire(study_uid)


def _open_spool(config: NodeConfig, own_results: OwnResults | None = None) -> Spool:
    return Spool(config.node.storage_path, config.node.min_free_mb, own_results=own_results)


def _wait_jobs(conns: Connections, job_ids: list[int], timeout_s: float) -> list[dict[str, Any]]:
    from . import status

    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [j for j in status.jobs(conns.get(), limit=1000) if j["id"] in job_ids]
        if all(j["state"] in ("done", "failed") for j in jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)


def cmd_process_study(args: argparse.Namespace, config: NodeConfig) -> int:
    """``cardionode process --study UID --from SOURCE [--wait S]``: retrieve, route, optionally wait."""
    from .state import Connections, InstanceIndex, OwnResults

    conns = Connections(config.node.storage_path)
    conns.get()  # creates or migrates the database
    own_results = OwnResults(config.node.storage_path)
    spool = _open_spool(config, own_results)
    try:
        result = retrieve_study(config, args.source, args.study, spool, timeout_s=args.timeout)
    except RetrieveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        own_results.close()
    out: dict[str, Any] = {"retrieve": result.as_dict()}
    if result.delivered_to_node:
        out["jobs"] = []
        out["note"] = "instances went to the running node's DIMSE listener; it routes the study after its quiet period"
    else:
        job_ids = complete_study_now(config, conns, lambda uid: InstanceIndex(conns.get()).study_view(uid), args.study)
        out["job_ids"] = job_ids
        if not job_ids:
            out["note"] = "no route matched the study (or it is waiting for more instances)"
        if args.wait and job_ids:
            out["jobs"] = _wait_jobs(conns, job_ids, args.wait)
    spool.close()
    conns.close_all()
    print(json.dumps(out, indent=2, default=str))
    if args.wait and out.get("jobs"):
        return 0 if all(j["state"] == "done" for j in out["jobs"]) else 1
    return 0


def add_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """The pull options of ``cardionode process`` (``--study`` and ``--from`` go together)."""
    parser.add_argument("--study", default=None, required=required,
                        help="Study Instance UID to pull from --from and process")
    parser.add_argument("--from", dest="source", default=None, required=required,
                        help="source name from the config's sources:")
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait for the jobs to finish (needs the node running); 0 = do not wait")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout for the retrieve (s)")


def process_study_main(args: argparse.Namespace) -> int:
    """Entry for the CLI: loads ``args.config`` (built-in defaults without one), sets up logging, runs the pull."""
    from .config_args import config_from_args
    from .logging_setup import setup_logging

    config = config_from_args(args)
    setup_logging(config.node.log_format, config.node.log_level)
    return cmd_process_study(args, config)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cardionode pull --study UID --from SOURCE [--wait S]`` (same as ``process --study --from``)."""
    from .config_args import add_config_arguments

    p = subparsers.add_parser("pull", help="retrieve a study from a configured source and process it")
    add_config_arguments(p)
    add_arguments(p, required=True)
    p.set_defaults(func=process_study_main)

"""DICOMweb STOW-RS sender: POSTs a batch of result files to a destination with dicomweb-client.

Outcomes per file come from the STOW-RS response dataset (PS3.18 10.5.3):
instances in ReferencedSOPSequence are delivered (a WarningReason there
still means stored); instances in FailedSOPSequence failed with their
FailureReason.  HTTP 409 (all failed) carries the same dataset.  Anything
that says nothing about individual instances (connection error, 5xx, 401,
404, unreadable response) raises :class:`SenderError`, so the whole batch
stays pending and the dispatch queue retries it with its own backoff;
dicomweb-client's internal retries are switched off so that there is only
one retry policy.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from ..config import AuthSection, DicomwebDestination
from .base import OutcomeCallback, SendOutcome, SenderError

__all__ = ["DicomwebSender", "make_session", "make_client", "PERMANENT_FAILURE_REASONS"]

log = logging.getLogger("cardionode.dispatch.dicomweb")

#: FailureReason values that retrying the same object cannot fix.
PERMANENT_FAILURE_REASONS = {
    0x0122,  # SOP class not supported
    0x0124,  # not authorized
    0xA900,  # data set does not match SOP class / study UID mismatch
    0xC000,  # cannot understand
    0xC122,  # referenced transfer syntax not supported
}


class _BearerAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r


def make_session(auth: AuthSection | None, verify_tls: bool) -> requests.Session:
    """A requests session with the configured auth (none | basic | bearer) and TLS verification."""
    session = requests.Session()
    session.verify = verify_tls
    if auth is not None and auth.type == "basic":
        session.auth = requests.auth.HTTPBasicAuth(auth.username or "", auth.password or "")
    elif auth is not None and auth.type == "bearer":
        session.auth = _BearerAuth(auth.token or "")
    return session


def make_client(
    url: str, auth: AuthSection | None, verify_tls: bool, timeout_s: float, session: requests.Session | None = None
) -> DICOMwebClient:
    """dicomweb-client for ``url`` with our session and without its own retry loop."""
    session = session if session is not None else make_session(auth, verify_tls)
    client = DICOMwebClient(url=url.rstrip("/"), session=session, timeout=timeout_s)
    client.set_http_retry_params(retry=False)
    return client


def _outcomes_from_response(
    paths: Sequence[Path], uids: Sequence[str], response: pydicom.Dataset, http_status: int
) -> list[SendOutcome]:
    stored = {str(item.get("ReferencedSOPInstanceUID", "")) for item in response.get("ReferencedSOPSequence", [])}
    failed = {
        str(item.get("ReferencedSOPInstanceUID", "")): int(item.get("FailureReason", 0xC000) or 0xC000)
        for item in response.get("FailedSOPSequence", [])
    }
    outcomes = []
    for path, uid in zip(paths, uids):
        if uid in stored:
            outcomes.append(SendOutcome(path, ok=True, status=http_status))
        elif uid in failed:
            reason = failed[uid]
            outcomes.append(
                SendOutcome(
                    path,
                    ok=False,
                    status=reason,
                    error=f"STOW-RS HTTP {http_status}: FailureReason 0x{reason:04X}",
                    permanent=reason in PERMANENT_FAILURE_REASONS,
                )
            )
        elif http_status == 200 and not failed and not stored:
            # A 200 without a response body (some servers): the standard says all stored.
            outcomes.append(SendOutcome(path, ok=True, status=http_status))
        else:
            outcomes.append(SendOutcome(path, ok=False, status=http_status,
                                        error=f"STOW-RS HTTP {http_status}: instance not in the response"))
    return outcomes


class DicomwebSender:
    """STOW-RS result files to a DICOMweb destination (base URL, auth, TLS verification)."""

    def __init__(self, name: str, destination: DicomwebDestination, calling_ae: str, timeout_s: float = 30.0) -> None:
        self.name = name
        self.destination = destination
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s
        session = make_session(destination.auth, destination.verify_tls)
        session.hooks["response"].append(self._remember_status)
        self._last_status = 0
        self._client = make_client(destination.url, destination.auth, destination.verify_tls, timeout_s, session)

    def _remember_status(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last_status = response.status_code

    def send(self, paths: Sequence[Path], on_outcome: OutcomeCallback | None = None) -> list[SendOutcome]:
        """STOW-RS ``paths`` in one request; ``on_outcome`` sees each outcome once the response is in."""
        if not paths:
            return []
        datasets, uids = [], []
        for path in paths:
            ds = pydicom.dcmread(path)
            datasets.append(ds)
            uids.append(str(ds.SOPInstanceUID))
        url = self.destination.url
        try:
            self._last_status = 0
            response = self._client.store_instances(datasets)
            status = self._last_status or 200
        except requests.HTTPError as exc:
            resp = exc.response
            status = resp.status_code if resp is not None else 0
            if status != 409 or resp is None:
                body = (resp.text[:200] if resp is not None else "").strip()
                raise SenderError(f"{self.name}: STOW-RS to {url} failed: HTTP {status} {body}") from exc
            try:
                response = pydicom.Dataset.from_json(resp.json())
            except ValueError as parse_exc:
                raise SenderError(f"{self.name}: STOW-RS HTTP 409 with an unreadable body") from parse_exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise SenderError(f"{self.name}: cannot reach {url}: {exc}") from exc
        except requests.RequestException as exc:
            raise SenderError(f"{self.name}: STOW-RS to {url} failed: {exc}") from exc
        except ValueError as exc:  # response of an unexpected media type
            raise SenderError(f"{self.name}: STOW-RS response from {url} unreadable: {exc}") from exc
        if status == 200 and response.get("FailedSOPSequence"):
            status = 202
        outcomes = _outcomes_from_response(paths, uids, response, status)
        bad = [o for o in outcomes if not o.ok]
        if bad:
            log.warning("STOW-RS partly failed", extra={"destination": self.name, "failed": len(bad),
                                                        "error": bad[0].error})
        if on_outcome is not None:
            for outcome in outcomes:
                on_outcome(outcome)
        return outcomes

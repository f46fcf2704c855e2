"""Bearer-token check for the HTTP port.

The token comes from ``api.token`` or the first line of ``api.token_file``
(read once at start).  With no token configured the protected endpoints
refuse every request (fail closed): the status API exposes patient study UIDs.
"""
from __future__ import annotations

import hmac
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..config import ApiSection

__all__ = ["TokenAuth", "load_token"]


def load_token(api: ApiSection) -> str | None:
    """The configured API token, or None when neither api.token nor api.token_file is set."""
    if api.token:
        return api.token
    if api.token_file:
        try:
            text = Path(api.token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"api.token_file: cannot read {api.token_file}: {exc.strerror}") from None
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise ValueError(f"api.token_file: {api.token_file} is empty")
        return token
    return None


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` with a constant-time comparison."""

    def __init__(self, api: ApiSection) -> None:
        self._token = load_token(api)
        self.stow_requires_token = api.stow_requires_token

    @property
    def configured(self) -> bool:
        return self._token is not None

    def is_valid(self, request: Request) -> bool:
        if self._token is None:
            return False
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return False
        return hmac.compare_digest(credentials.strip().encode("utf-8"), self._token.encode("utf-8"))

    def deny(self, request: Request) -> JSONResponse | None:
        """None when the request may go on, else the 401 response to send."""
        if self.is_valid(request):
            return None
        detail = ("invalid or missing bearer token" if self._token is not None
                  else "no API token configured on this node")
        return JSONResponse(
            {"error": "unauthorized", "detail": detail},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="cardionode"'},
        )

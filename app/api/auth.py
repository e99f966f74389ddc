"""Bearer-key authentication (`ASR_API_KEYS`); keys are compared in constant time and never logged."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Annotated

from fastapi import Depends, Request

from app.api.deps import get_settings
from app.api.errors import unauthorized
from app.config import Settings


def key_is_valid(presented: str | None, keys: Sequence[str]) -> bool:
    """Whether `presented` equals one of `keys`; every key is compared so timing does not reveal which matched."""
    if presented is None:
        return False
    given = presented.encode()
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]
    return any(matches)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def presented_key(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The key a client presents: the bearer token of its Authorization header, else an `api_key` query
    parameter (browsers cannot set headers on WebSocket connections)."""
    token = bearer_token(headers.get("authorization"))
    if token is None and query is not None:
        token = query.get("api_key") or None
    return token


def is_authorized(settings: Settings, headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> bool:
    """True when no keys are configured, or the presented key is one of them (for the WebSocket endpoint)."""
    keys = settings.server.api_keys
    return not keys or key_is_valid(presented_key(headers, query), keys)


async def require_api_key(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """Dependency: 401 with `WWW-Authenticate: Bearer` unless the request carries a configured key."""
    keys = settings.server.api_keys
    if not keys:
        return
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'.")
    if not key_is_valid(token, keys):
        raise unauthorized("Invalid API key.")

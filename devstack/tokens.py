"""Access tokens issued by the identity stand-in and checked by the services that accept them.

Tokens are JWT-shaped (so SDKs that peek at claims are happy) and HMAC-signed with a key made per
process, so a service stand-in can tell a token the identity stand-in issued from anything else and
check its audience, as Key Vault and Graph do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

_SIGNING_KEY = secrets.token_bytes(32)


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWTs and the services' paging markers use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_b64 = b64url


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(*, audience: str, subject: str, tenant_id: str, lifetime_seconds: int = 3600) -> tuple[str, int]:
    """Return ``(token, expires_on)`` for ``audience`` (a resource URI without ``/.default``)."""
    now = int(time.time())
    expires_on = now + lifetime_seconds
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"aud": audience.rstrip("/"), "sub": subject, "oid": subject, "tid": tenant_id,
              "iat": now, "nbf": now, "exp": expires_on}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}", expires_on


def verify_token(token: str, *, audience: str) -> dict[str, Any] | None:
    """Return the claims when ``token`` was issued here, is current and is for ``audience``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    expected = _b64(hmac.new(_SIGNING_KEY, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, parts[2]):
        return None
    try:
        claims: dict[str, Any] = json.loads(_unb64(parts[1]))
    except ValueError:
        return None
    if claims.get("aud") != audience.rstrip("/") or int(claims.get("exp", 0)) < time.time():
        return None
    return claims


def peek_claims(token: str) -> dict[str, Any] | None:
    """A token's claims without checking its signature: only to word a 401 (whose tenant or
    audience it was for); None when it is not JWT-shaped."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


def bearer_token(authorization: str | None) -> str | None:
    """Extract the token from an ``Authorization: Bearer ...`` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None

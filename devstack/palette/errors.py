"""Palette's errors: a ``V1Error`` body ``{"code", "message", "details", "ref"}`` with a status.

The spec declares no error responses, so the status codes follow Palette's documented meaning
(400 bad request, 401 bad credentials, 403 forbidden, 404 resource or dependent resource not
found, 429 rate limited) and the codes are the ones Palette or its SDK use where known
(``ResourceNotFound``, ``TooManyRequests``). Where Palette's code is unknown the stand-in picks one
and keeps it stable, because clients branch on codes:

=====  ================================  =====================================================
400    ``InvalidRequest``                the spec or a documented rule is broken; ``details``
                                         lists every violation (``in``, ``path``, ``rule``)
400    ``CloudAccountValidationFailed``  Azure refused the credentials (reason in the message)
400    ``PrivateCloudGatewayNotFound``   ``annotations.overlordUid`` names no gateway
400    ``PrivateCloudGatewayNotRunning`` the gateway exists but its state is not ``Running``
400    ``UserNotFound``                  ``spec.userUid`` of an API key names no user
400    ``ResourceLimitExceeded``         a create past a tenant resource limit (cloud accounts,
                                         SSH keys, API keys per user); ``details``: ``kind``,
                                         ``limit``, ``count``
401    ``Unauthorized``                  missing, unknown, revoked or expired ``ApiKey``
403    ``Forbidden``                     unknown ``ProjectUid``, changing a tenant resource
                                         from a project scope, or another tenant's limits
404    ``ResourceNotFound``              no such resource in the caller's scope
404    ``NotFound``                      no such route
409    ``CloudAccountAlreadyExists``,    the name is taken in that scope
       ``SshKeyAlreadyExists``,
       ``BackupLocationAlreadyExists``,
       ``ApiKeyAlreadyExists``
415    ``UnsupportedMediaType``          a body that is not ``application/json``
429    ``TooManyRequests``               rate limit (no ``Retry-After``, as documented)
=====  ================================  =====================================================
"""

from __future__ import annotations

from typing import Any

from devstack.httpbase import HttpError


class PaletteError(HttpError):
    """An error Palette answers with; ``details`` becomes the V1Error ``details`` object."""

    def __init__(self, status: int, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(status, code, message, details=details)


class InvalidRequest(PaletteError):
    def __init__(self, message: str, violations: list[dict[str, str]] | None = None) -> None:
        super().__init__(400, "InvalidRequest", message,
                         details={"violations": violations} if violations else None)


def invalid_field(path: str, rule: str, message: str) -> InvalidRequest:
    """A 400 about one body field, shaped like a spec violation so clients parse one form."""
    return InvalidRequest(message, [{"in": "body", "path": path, "rule": rule, "message": message}])


class ResourceNotFound(PaletteError):
    def __init__(self, kind: str, uid: str) -> None:
        super().__init__(404, "ResourceNotFound", f"{kind} '{uid}' not found.")


class AlreadyExists(PaletteError):
    def __init__(self, code: str, kind: str, name: str, scope: str) -> None:
        super().__init__(409, code, f"{kind} with name '{name}' already exists in the {scope} scope.")


class Unauthorized(PaletteError):
    def __init__(self, message: str) -> None:
        super().__init__(401, "Unauthorized", message)


class Forbidden(PaletteError):
    def __init__(self, message: str) -> None:
        super().__init__(403, "Forbidden", message)

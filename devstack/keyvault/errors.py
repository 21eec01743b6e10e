"""Key Vault's errors, each carrying its real status, code, message text and inner error code.

Clients map status codes onto azure-core exceptions (404 ResourceNotFoundError, 409
ResourceExistsError, 401 ClientAuthenticationError) and show the message to people, so both are
copied from what the service answers rather than invented.
"""

from __future__ import annotations

from devstack.httpbase import HttpError

# Where Key Vault's not-found messages send people; part of the message text clients show.
_NOT_FOUND_HELP = "https://go.microsoft.com/fwlink/?linkid=2125182"


class KeyVaultError(HttpError):
    """An error in Key Vault's wire form: ``{"error": {"code", "message", "innererror"?}}``."""

    def __init__(self, status: int, code: str, message: str, *, inner_code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, code, message, headers=headers, details=inner_code)
        self.inner_code = inner_code


class BadParameter(KeyVaultError):
    """400 for anything malformed in the URI, query or body."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "BadParameter", message)


class InvalidName(BadParameter):
    def __init__(self, name: str) -> None:
        super().__init__(f"The request URI contains an invalid name: {name}")


class SecretNotFound(KeyVaultError):
    """404 for a live secret (or version) that does not exist; also what a soft-deleted one gets."""

    def __init__(self, name_or_id: str) -> None:
        super().__init__(
            404, "SecretNotFound",
            f"A secret with (name/id) {name_or_id} was not found in this key vault. If you recently "
            "deleted this secret you may be able to recover it using the correct recovery command. "
            f"For help resolving this issue, please see {_NOT_FOUND_HELP}",
        )


class DeletedSecretNotFound(KeyVaultError):
    def __init__(self, name: str) -> None:
        super().__init__(404, "SecretNotFound", f"Deleted Secret not found: {name}")


class SecretDisabled(KeyVaultError):
    def __init__(self) -> None:
        super().__init__(403, "Forbidden", "Operation get is not allowed on a disabled secret.",
                         inner_code="SecretDisabled")


class DeletedButRecoverable(KeyVaultError):
    """409 when a name is reused while its soft-deleted secret still exists."""

    def __init__(self, name: str) -> None:
        super().__init__(
            409, "Conflict",
            f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
            "reused; in this state, the secret can only be recovered or purged.",
            inner_code="ObjectIsDeletedButRecoverable",
        )


class PurgeProtected(KeyVaultError):
    def __init__(self) -> None:
        super().__init__(
            403, "Forbidden",
            'Operation "purge" is not allowed because purge protection is enabled for this vault. '
            "Key Vault service will automatically purge it after the retention period has passed.",
        )


class Unauthorized(KeyVaultError):
    """401; Key Vault always attaches its challenge so a client can (re)discover how to sign in."""

    def __init__(self, message: str, challenge: str) -> None:
        super().__init__(401, "Unauthorized", message, headers={"WWW-Authenticate": challenge})

"""Constrained field types of the request schema, each checking its own rule.

Every check raises :func:`rule_error` with a message written here, saying what is allowed. Pydantic's
own messages are never shown to a caller: they are phrased for Python developers, and pydantic keeps
the offending input next to them, which for a client secret is exactly what must not travel.
Messages therefore never quote the input.

Strings, booleans and integers are strict: ``"yes"`` is not a boolean, ``"180"`` is not a number,
and ``180.0`` is not an integer, so a ticketing system's sloppy serialiser fails loudly here rather
than being guessed at.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from email_validator import validate_email
from pydantic import AfterValidator, BeforeValidator, PlainSerializer, PlainValidator, SecretStr, Strict
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from pydantic import ValidationInfo

RULE_ERROR = "onboarding_rule"
"""The pydantic error type of every :func:`rule_error`; the parser keeps their messages as they are."""
CONTEXT_KEY = "onboarding"
"""Key of the :class:`ParseOptions` in the pydantic validation context."""

MAX_DAYS = 730
"""Longest lifetime (days) of a generated client secret or a Palette API key: two years."""
MAX_SECRET_CHARS = 1024
MAX_SSH_KEY_CHARS = 16 * 1024
MAX_PEM_CHARS = 32 * 1024
MAX_EMAIL_CHARS = 254
GENERATED_SSH_KEY_BITS = 4096
"""Size of the RSA key pair generated for ``sshKey.generate``: the guide's choice, fit for AKS."""

# Line and paragraph separators count as control characters: every free-text field ends up in
# logs, events and Palette's UI, where a line break forges an extra line.
_BAD_TEXT_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


@dataclass(frozen=True, kw_only=True)
class ParseOptions:
    """What differs between callers of the parser, passed through the pydantic validation context.

    allow_inline_secret: accept ``azure.secret.source = "inline"`` (the HTTPS intake only; a queue
        message never carries a raw secret).
    require_pcg_for_us_government: SaaS Palette needs a Private Cloud Gateway for a US Government
        account; a self-hosted install may not.
    now: the clock for ``apiKey.expiresOn`` checks (timezone-aware, UTC).
    allowed_secret_prefix: when set, a client secret taken from Key Vault must be named with this
        prefix (an allow-list for operator-provided secrets); the product's own client-secret
        name for the request's account is always allowed.
    """

    allow_inline_secret: bool = False
    require_pcg_for_us_government: bool = True
    allowed_secret_prefix: str = ""
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def options_of(info: ValidationInfo) -> ParseOptions:
    """The options of this validation run; defaults when a model is validated without a context."""
    context = info.context
    if isinstance(context, dict):
        options = context.get(CONTEXT_KEY)
        if isinstance(options, ParseOptions):
            return options
    return ParseOptions()


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def rule_error(message: str, *, at: tuple[str | int, ...] = ()) -> PydanticCustomError:
    """The error every check raises: our own words, never the input.

    ``at`` names a field below the one being validated, for rules that span fields (the error then
    lands on the field that has to change, e.g. ``palette.privateCloudGateway``).
    """
    return PydanticCustomError(RULE_ERROR, message, {"at": at} if at else None)


def is_clean_text(value: str) -> bool:
    """True if ``value`` has no control characters, line breaks or lone surrogates."""
    return all(unicodedata.category(char) not in _BAD_TEXT_CATEGORIES for char in value)


def _matching(pattern: str, rule: str) -> AfterValidator:
    compiled = re.compile(pattern, re.ASCII)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise rule_error(rule)
        return value

    return AfterValidator(check)


def _text(min_chars: int, max_chars: int) -> AfterValidator:
    if min_chars:
        rule = f"must be {min_chars}-{max_chars} characters, without control characters or line breaks"
    else:
        rule = f"must be at most {max_chars} characters, without control characters or line breaks"

    def check(value: str) -> str:
        if not min_chars <= len(value) <= max_chars or not is_clean_text(value):
            raise rule_error(rule)
        return value

    return AfterValidator(check)


def _days() -> AfterValidator:
    def check(value: int) -> int:
        if not 1 <= value <= MAX_DAYS:
            raise rule_error(f"must be a whole number of days from 1 to {MAX_DAYS}")
        return value

    return AfterValidator(check)


E = TypeVar("E", bound=StrEnum)


def one_of(enum: type[E]) -> BeforeValidator:
    """Accept exactly the wire values of ``enum`` and say which they are when the input is not one."""
    members = {member.value: member for member in enum}
    rule = "must be one of " + ", ".join(members)

    def check(value: Any) -> E:
        if isinstance(value, enum):
            return value
        if isinstance(value, str) and value in members:
            return members[value]
        raise rule_error(rule)

    return BeforeValidator(check)


# --- Identifiers ------------------------------------------------------------------------------

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
RequestId = Annotated[
    str, Strict(), _matching(REQUEST_ID_PATTERN.pattern, "must be 1-64 characters: letters, digits, '.', '_' or '-'")
]
ACCOUNT_NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{2,63}", re.ASCII)
"""Palette account names as the request schema allows them; Key Vault names build on it."""
AccountName = Annotated[
    str,
    Strict(),
    _matching(
        ACCOUNT_NAME_PATTERN.pattern,
        "must be 3-64 characters: lower-case letters, digits or '-', starting with a letter",
    ),
]
SshKeyName = Annotated[
    str,
    Strict(),
    _matching(
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        "must be 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
]
KeyVaultSecretName = Annotated[
    str,
    Strict(),
    _matching(r"[A-Za-z0-9-]{1,127}", "must be a Key Vault secret name: 1-127 letters, digits or '-'"),
]
KeyVaultVersion = Annotated[
    str, Strict(), _matching(r"[0-9A-Fa-f]{32}", "must be a Key Vault secret version: 32 hex digits")
]

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE)


def _guid(value: str) -> str:
    if _GUID.fullmatch(value) is None:
        raise rule_error("must be a GUID: 8-4-4-4-12 hex digits, e.g. 11111111-1111-4111-8111-111111111111")
    if not value.strip("0-"):
        raise rule_error("must not be the all-zero GUID")
    return value.lower()


Guid = Annotated[str, Strict(), AfterValidator(_guid)]
"""A GUID in the 8-4-4-4-12 form, normalised to lower case (Entra ID ids compare case-insensitively)."""

# --- Free text and numbers --------------------------------------------------------------------

Text64 = Annotated[str, Strict(), _text(1, 64)]
Text128 = Annotated[str, Strict(), _text(1, 128)]
Text256 = Annotated[str, Strict(), _text(1, 256)]
Description = Annotated[str, Strict(), _text(0, 256)]
Days = Annotated[int, Strict(), _days()]

# --- Secrets, keys and certificates -----------------------------------------------------------


def _secret_value(value: Any) -> Any:
    # Runs before SecretStr wraps the value; the message must never include it.
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(raw, str):
        raise rule_error("expected a string")
    if not 1 <= len(raw) <= MAX_SECRET_CHARS or not is_clean_text(raw):
        raise rule_error(f"must be 1-{MAX_SECRET_CHARS} characters, without control characters")
    return value


SecretValue = Annotated[SecretStr, BeforeValidator(_secret_value)]
"""A raw client secret: masked in repr, str, dumps and errors."""

_SSH_KEY_RULE = "must be one OpenSSH public key line: 'ssh-rsa AAAA... [comment]'"


@lru_cache(maxsize=256)
def describe_ssh_key(line: str) -> tuple[str, int | None]:
    """The key type (``ssh-rsa``, ``ssh-ed25519``, ...) and, for RSA, the size in bits.

    Raises
    ------
    ValueError
        ``line`` is not an OpenSSH public key that this build of cryptography can read.
    """
    try:
        key = load_ssh_public_key(line.encode("utf-8"))
    except UnsupportedAlgorithm as exc:
        raise ValueError("unsupported SSH key type") from exc
    bits = key.key_size if isinstance(key, rsa.RSAPublicKey) else None
    return line.split(None, 1)[0], bits


def _ssh_public_key(value: str) -> str:
    line = value.strip()
    if not line or len(line) > MAX_SSH_KEY_CHARS or not is_clean_text(line):
        raise rule_error(_SSH_KEY_RULE)
    if line.split(None, 1)[0] == "ssh-dss":
        raise rule_error("DSA keys are not supported: use an RSA, Ed25519 or ECDSA key")
    try:
        describe_ssh_key(line)
    except ValueError:
        raise rule_error(_SSH_KEY_RULE) from None
    return line


SshPublicKey = Annotated[str, Strict(), AfterValidator(_ssh_public_key)]
"""One authorized_keys line (type, base64 key, optional comment), trimmed."""


def _pem_certificate(value: str) -> str:
    rule = "must be one or more PEM certificates (-----BEGIN CERTIFICATE----- ...)"
    if len(value) > MAX_PEM_CHARS or "-----BEGIN CERTIFICATE-----" not in value:
        raise rule_error(rule)
    try:
        x509.load_pem_x509_certificates(value.encode("ascii"))
    except ValueError:  # includes UnicodeEncodeError
        raise rule_error(rule) from None
    return value


PemCertificate = Annotated[str, Strict(), AfterValidator(_pem_certificate)]


def _email(value: str) -> str:
    rule = "must be an email address like name@example.com"
    if len(value) > MAX_EMAIL_CHARS:
        raise rule_error(rule)
    try:
        return validate_email(value, check_deliverability=False).normalized
    except ValueError:  # EmailNotValidError, and codec errors on odd Unicode
        raise rule_error(rule) from None


Email = Annotated[str, Strict(), AfterValidator(_email)]
"""An email address, checked for syntax only (no DNS lookup), with its domain normalised."""

# --- Dates ------------------------------------------------------------------------------------

_RFC3339_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_RFC3339_DATE_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_RFC3339_RULE = "must be an RFC 3339 date (2026-12-31) or date-time with a UTC offset (2026-12-31T23:59:59Z)"
END_OF_DAY = time(23, 59, 59)
"""A date-only ``expiresOn`` means the key works through that whole day (UTC)."""


def _rfc3339(value: Any) -> date:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise rule_error(_RFC3339_RULE)
        return _to_utc(value)
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise rule_error("expected a string")
    if _RFC3339_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise rule_error(_RFC3339_RULE) from None
    match = _RFC3339_DATE_TIME.fullmatch(value)
    if match is None:
        raise rule_error(_RFC3339_RULE)
    day, clock, fraction, offset = match.groups()
    micro = f".{(fraction or '')[:6]:0<6}"
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return _to_utc(datetime.fromisoformat(f"{day}T{clock}{micro}{offset}"))
    except ValueError:
        raise rule_error(_RFC3339_RULE) from None


def _to_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 has no UTC counterpart
        raise rule_error(_RFC3339_RULE) from None


def _rfc3339_text(value: date) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value.isoformat()


Rfc3339 = Annotated[
    datetime | date,
    PlainValidator(_rfc3339, json_schema_input_type=str),
    PlainSerializer(_rfc3339_text, return_type=str, when_used="json"),
]
"""A date, or a date-time with an offset (converted to UTC so equal instants compare equal)."""


def end_of(moment: date) -> datetime:
    """The last second an ``expiresOn`` value covers, in UTC."""
    if isinstance(moment, datetime):
        return moment
    return datetime.combine(moment, END_OF_DAY, tzinfo=UTC)


def expiry_problem(moment: date, now: datetime) -> str | None:
    """What is wrong with ``expiresOn`` = ``moment`` at ``now``, or None when it is fine.

    The upper bound counts UTC calendar days, so the date ``today + 730 days`` itself is allowed.
    """
    expiry = end_of(moment)
    if expiry <= now:
        return "must be in the future"
    if expiry.date() > (now + timedelta(days=MAX_DAYS)).date():
        return f"must be at most {MAX_DAYS} days ahead"
    return None

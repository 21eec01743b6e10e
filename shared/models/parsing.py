"""Parse a request body into an :class:`OnboardingRequest`, and fingerprint the result.

Parsing is the one gate every request passes before anything calls Palette, Graph or Key Vault:
a bad body yields a :class:`RequestValidationError` listing one :class:`FieldError` per bad field,
in words a person can act on, and never with an input value in them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.errors import FieldError, RequestValidationError
from shared.models.fields import CONTEXT_KEY, RULE_ERROR, ParseOptions, as_utc
from shared.models.request import PUBLIC_SECRET_SOURCES, SECRET_SOURCES, InlineSecret, OnboardingRequest

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

MAX_BODY_BYTES = 64 * 1024
"""Largest body accepted; a real request, PEM chain included, is a few kilobytes."""

_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "expected a string",
    "bool_type": "expected a boolean (true or false)",
    "int_type": "expected an integer",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "dict_type": "expected an object",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "invalid_key": "keys must be strings",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}", re.ASCII)
_MAX_KEY_IN_PATH = 40


def parse_request(
    raw: bytes | str | Mapping[str, Any],
    *,
    allow_inline_secret: bool = False,
    now: datetime | None = None,
    require_pcg_for_us_government: bool = True,
    allowed_secret_prefix: str = "",
) -> OnboardingRequest:
    """Validate an onboarding request (schema v1) and return it normalised, defaults filled.

    Parameters
    ----------
    raw
        The body: UTF-8 JSON bytes (a BOM is tolerated), a JSON string, or an already decoded object.
    allow_inline_secret
        Accept ``azure.secret.source = "inline"``. Only the HTTPS intake sets this; a queue message
        with a raw secret is refused.
    now
        Clock for the ``apiKey.expiresOn`` limits; defaults to the current time. Naive means UTC.
    require_pcg_for_us_government
        Require ``palette.privateCloudGateway`` for ``AzureUSGovernmentCloud`` (SaaS Palette); a
        self-hosted install may turn this off.
    allowed_secret_prefix
        When set, ``azure.secret.secretName`` must start with it (or be the product's own
        client-secret name for the account): operators choose which secrets a request may name.

    Returns
    -------
    OnboardingRequest

    Raises
    ------
    RequestValidationError
        With one :class:`FieldError` per bad field; the path is ``""`` for the body itself.
    """
    options = ParseOptions(
        allow_inline_secret=allow_inline_secret,
        require_pcg_for_us_government=require_pcg_for_us_government,
        allowed_secret_prefix=allowed_secret_prefix,
        now=as_utc(now) if now is not None else datetime.now(UTC),
    )
    data = _load_object(raw)
    try:
        return OnboardingRequest.model_validate(data, context={CONTEXT_KEY: options})
    except ValidationError as exc:
        # "from None": pydantic's error keeps the input values, and a chained traceback would
        # print them (a client secret among them) into the logs.
        raise RequestValidationError(_field_errors(exc, options)) from None


M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], raw: bytes | str | Mapping[str, Any], *, what: str) -> M:
    """Validate ``raw`` (the same body rules as :func:`parse_request`) as another wire model of the
    product, with the same field errors.

    Raises
    ------
    RequestValidationError
        With one :class:`FieldError` per bad field.
    """
    options = ParseOptions()
    data = _load_object(raw)
    try:
        return model.model_validate(data, context={CONTEXT_KEY: options})
    except ValidationError as exc:
        raise RequestValidationError(_field_errors(exc, options), what=what) from None


def operation_of(raw: bytes | str | Mapping[str, Any]) -> str:
    """The ``operation`` a body names (``""`` when it names none or cannot be read): which plan
    parses it. Read tolerantly; the plan's own parser reports what is wrong with the body."""
    data: Any = raw
    if isinstance(raw, bytes | bytearray | str):
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return ""
    value = data.get("operation") if isinstance(data, Mapping) else None
    return value if isinstance(value, str) else ""


def identity_of(raw: bytes | str | Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The ``requestId`` and ``accountName`` of a body that may be invalid, each only where it is
    itself valid: enough to record and announce a rejection under the right ticket."""
    from shared.models.fields import ACCOUNT_NAME_PATTERN, REQUEST_ID_PATTERN

    data: Any = raw
    if isinstance(raw, bytes | bytearray | str):
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return None, None
    if not isinstance(data, Mapping):
        return None, None
    request_id, account_name = data.get("requestId"), data.get("accountName")
    return (request_id if isinstance(request_id, str) and REQUEST_ID_PATTERN.fullmatch(request_id) else None,
            account_name if isinstance(account_name, str) and ACCOUNT_NAME_PATTERN.fullmatch(account_name) else None)


def request_fingerprint(request: OnboardingRequest) -> str:
    """SHA-256 (hex) of the request's canonical JSON: sorted keys, defaults filled, nulls left out.

    Two bodies that mean the same request (key order, GUID case, clusterTypes order, defaults
    spelled out or not) get the same fingerprint, so a resubmission with another body is told apart
    (HTTP 409). An inline secret enters as the SHA-256 of its value, never the value: a resend with
    a different secret is a different request, yet nothing that stores or logs the hash input sees
    the secret. Client secrets are long random strings, so their digest cannot be guessed back.
    """
    encoded = json.dumps(_canonical(request), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


def _canonical(request: OnboardingRequest) -> dict[str, Any]:
    data = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    # Fields added to schema v1 later leave the canonical form when they hold their defaults, so a
    # request queued before they existed keeps its fingerprint.
    for added, default in (("operation", "onboard"), ("recoverDeletedSecrets", False)):
        if data.get(added) == default:
            del data[added]
    secret = request.azure.secret
    if isinstance(secret, InlineSecret):
        digest = hashlib.sha256(secret.value.get_secret_value().encode("utf-8")).hexdigest()
        data["azure"]["secret"] = {"source": "inline", "valueSha256": digest}
    return data


# --- the body ---------------------------------------------------------------------------------


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__("duplicate key")
        self.key = key


def _load_object(raw: object) -> dict[Any, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, bytes | bytearray | memoryview):
        body = bytes(raw)
        if len(body) > MAX_BODY_BYTES:
            raise _body_error(f"is larger than {MAX_BODY_BYTES // 1024} KiB")
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _body_error("must be UTF-8 encoded JSON") from None
    elif isinstance(raw, str):
        if len(raw) > MAX_BODY_BYTES:
            raise _body_error(f"is larger than {MAX_BODY_BYTES // 1024} KiB")
        text = raw.removeprefix("\ufeff")
    else:
        raise _body_error("must be a JSON object")
    if not text.strip():
        raise _body_error("is empty; send the request as a JSON object")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _DuplicateKeyError as exc:
        raise _body_error(f"repeats the key {_render_key(exc.key)}: each key may appear once") from None
    except json.JSONDecodeError as exc:
        raise _body_error(f"is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except ValueError:  # NaN/Infinity, or an integer too long to convert
        raise _body_error("is not valid JSON") from None
    except RecursionError:
        raise _body_error("is nested too deeply") from None
    if not isinstance(data, dict):
        raise _body_error("must be a JSON object")
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would let two readers of the same body see different requests.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _body_error(message: str) -> RequestValidationError:
    return RequestValidationError([FieldError("", f"the request body {message}")])


# --- pydantic errors to field errors ----------------------------------------------------------


def _field_errors(exc: ValidationError, options: ParseOptions) -> list[FieldError]:
    found: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        loc = _without_union_tags(error["loc"])
        message = _message(error, options)
        if error["type"] == RULE_ERROR:
            loc += tuple((error.get("ctx") or {}).get("at", ()))
        elif error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc += ("source",)
        found.setdefault(_render_path(loc), message)
    return [FieldError(path, message) for path, message in found.items()]


def _message(error: ErrorDetails, options: ParseOptions) -> str:
    kind = error["type"]
    if kind == RULE_ERROR:
        return error["msg"]
    if kind in ("too_short", "too_long"):  # lists
        limits = error.get("ctx") or {}
        return (f"must list at least {limits.get('min_length')}" if kind == "too_short"
                else f"must list at most {limits.get('max_length')}")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        sources = [s for s in PUBLIC_SECRET_SOURCES if s != "inline" or options.allow_inline_secret]
        prefix = "must be" if kind == "union_tag_invalid" else "is required:"
        return f"{prefix} one of {', '.join(sources)}"
    return _MESSAGES.get(kind, "is not valid")


def _without_union_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # Pydantic puts the discriminator's value into the path (azure.secret.keyVault.secretName);
    # the wire has no such level.
    if len(loc) > 2 and loc[:2] == ("azure", "secret") and loc[2] in SECRET_SOURCES:
        return loc[:2] + loc[3:]
    return loc


def _render_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{_render_key(part)}]"
    return path


def _render_key(key: object) -> str:
    # Unknown keys come from the caller: quote them, and cut long ones so a path stays short
    # even if someone pasted a secret where a key belongs.
    text = str(key)
    if len(text) > _MAX_KEY_IN_PATH:
        text = text[: _MAX_KEY_IN_PATH - 8] + "..."
    return json.dumps(text)

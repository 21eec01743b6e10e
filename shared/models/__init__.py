"""The onboarding request, schema version 1: the typed model and the one way to parse it.

:func:`parse_request` implements the "Onboarding request, version 1" table of the product brief,
rule for rule, and reports one :class:`shared.errors.FieldError` per bad field (``azure.tenantId``,
``clusterTypes[1]``, ``""`` for the body itself). :func:`request_fingerprint` hashes the normalised
request for the 409 check on resubmission.

Additions to the v1 table, and how its loose ends are read:

* ``azure.tlsCert`` (new, optional): PEM certificate(s) sent to Palette as ``tls.cert``. Allowed
  only with ``azure.cloud = AzureUSSecretCloud``, as in Palette's Terraform provider.
* ``azure.secret`` may also be ``{"source": "inline", "value": "..."}``, but only where the caller
  passes ``allow_inline_secret=True`` (the HTTPS intake, which keeps it in Key Vault under a
  staging name at once and queues ``{"source": "staged", "secretName", "version"}``, see
  :meth:`OnboardingRequest.with_staged_secret`). Anywhere else the error is at
  ``azure.secret.source``. The value is a ``SecretStr``: masked in repr, dumps and errors.
* ``azure.secret.source`` is required once ``azure.secret`` is given; leaving ``azure.secret`` out
  means ``{"source": "generate", "validityDays": 180}``. ``version`` is 32 hex digits.
* ``palette.privateCloudGateway`` is required with ``AzureUSGovernmentCloud`` (SaaS Palette);
  ``require_pcg_for_us_government=False`` lifts that for self-hosted Palette.
* ``sshKey`` needs exactly one of ``publicKey`` and ``generate: true``. ``publicKey`` is one
  OpenSSH authorized_keys line (RSA, Ed25519 or ECDSA; DSA is refused), trimmed.
* ``apiKey`` needs exactly one of ``expiresInDays`` (1-730) and ``expiresOn``. ``expiresOn`` is an
  RFC 3339 date or a date-time with an offset; a date means the end of that day (23:59:59 UTC). It
  must lie in the future and at most 730 days ahead (by UTC date). ``description`` is at most 256
  characters; ``name`` 1-64.
* Text fields (``tenantName`` up to 256, ``project`` up to 64, ``privateCloudGateway`` up to 128)
  refuse control characters and line breaks: they end up in logs, events and Palette's UI.
* ``null`` is the same as leaving out a field that has no default; a field with a default does not
  take ``null``.
* Normalisation: GUIDs lower-case, the email's domain lower-case, ``expiresOn`` date-times in UTC,
  ``clusterTypes`` in the order ``iaas``, ``aks`` (duplicates are an error).
* The body is UTF-8 JSON of at most 64 KiB, an object, with no repeated keys and no NaN.
"""

from __future__ import annotations

from shared.models.fields import GENERATED_SSH_KEY_BITS, MAX_DAYS
from shared.models.parsing import MAX_BODY_BYTES, identity_of, operation_of, parse_request, request_fingerprint
from shared.models.request import (
    MIN_AKS_RSA_BITS,
    ApiKeySpec,
    AzureCloud,
    AzureSpec,
    ClusterType,
    GeneratedSecret,
    InlineSecret,
    KeyVaultSecret,
    OnboardingRequest,
    PaletteScope,
    PaletteSpec,
    SecretSpec,
    SshKeySpec,
    StagedSecret,
)

__all__ = [
    "GENERATED_SSH_KEY_BITS",
    "MAX_BODY_BYTES",
    "MAX_DAYS",
    "MIN_AKS_RSA_BITS",
    "ApiKeySpec",
    "AzureCloud",
    "AzureSpec",
    "ClusterType",
    "GeneratedSecret",
    "InlineSecret",
    "KeyVaultSecret",
    "OnboardingRequest",
    "PaletteScope",
    "PaletteSpec",
    "SecretSpec",
    "SshKeySpec",
    "StagedSecret",
    "identity_of",
    "operation_of",
    "parse_request",
    "request_fingerprint",
]

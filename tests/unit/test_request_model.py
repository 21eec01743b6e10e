"""The onboarding request model (schema v1): every rule, the error paths, the fingerprint, fuzzing.

Pure logic, so no local stack is needed: bodies go straight into :func:`parse_request`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import shared.models.parsing as parsing
from shared.errors import RequestValidationError
from shared.models import (
    AzureCloud,
    ClusterType,
    GeneratedSecret,
    InlineSecret,
    KeyVaultSecret,
    OnboardingRequest,
    PaletteScope,
    StagedSecret,
    parse_request,
    request_fingerprint,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TENANT = "11111111-1111-4111-8111-111111111111"
CLIENT = "22222222-2222-4222-8222-222222222222"
SECRET = "Zx8Q~s3cr3t-VALUE-that-must-never-leak.0123"
DELETE = object()


def _openssh(key: Any, comment: str = "") -> str:
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line.decode() + (f" {comment}" if comment else "")


RSA_2048 = _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048), "ops@example.com")
RSA_1024 = _openssh(rsa.generate_private_key(public_exponent=65537, key_size=1024))
ED25519 = _openssh(ed25519.Ed25519PrivateKey.generate(), "laptop")
ECDSA = _openssh(ec.generate_private_key(ec.SECP256R1()))
DSA = "ssh-dss AAAAB3NzaC1kc3MAAACBAPzyPretendDsaKeyBlob"


def _self_signed_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "palette.example")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


PEM = _self_signed_pem()


def minimal() -> dict[str, Any]:
    return {"requestId": "DEMO-1001", "accountName": "demo", "azure": {"tenantId": TENANT, "clientId": CLIENT}}


def body(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The minimal body with ``changes`` applied: dotted paths to values, or DELETE."""
    result = minimal()
    for path, value in (changes or {}).items():
        *parents, leaf = path.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return result


def parse(raw: Any, **options: Any) -> OnboardingRequest:
    options.setdefault("now", NOW)
    return parse_request(raw, **options)


def errors_of(raw: Any, **options: Any) -> dict[str, str]:
    with pytest.raises(RequestValidationError) as caught:
        parse(raw, **options)
    paths = [error.path for error in caught.value.errors]
    assert len(paths) == len(set(paths)), f"one error per field, got {paths}"
    return {error.path: error.message for error in caught.value.errors}


# --- good and bad values, rule by rule --------------------------------------------------------

GOOD: list[dict[str, Any]] = [
    {"requestId": "A"},
    {"requestId": "x" * 64},
    {"requestId": "INC.0042_retry-2"},
    {"accountName": "abc"},
    {"accountName": "a" + "1-" * 31 + "z"},
    {"azure.tenantId": TENANT.upper()},
    {"azure.cloud": "AzurePublicCloud"},
    {"azure.cloud": "AzureUSGovernmentCloud", "palette.privateCloudGateway": "pcg-usgov"},
    {"azure.cloud": "AzureUSSecretCloud"},
    {"azure.cloud": "AzureUSSecretCloud", "azure.tlsCert": PEM},
    {"azure.tenantName": "Contoso Ltd. (Zürich)"},
    {"azure.tenantName": None},
    {"azure.disableProperties": True},
    {"azure.secret": {"source": "generate"}},
    {"azure.secret": {"source": "generate", "validityDays": 1}},
    {"azure.secret": {"source": "generate", "validityDays": 730}},
    {"azure.secret": {"source": "keyVault", "secretName": "a"}},
    {"azure.secret": {"source": "keyVault", "secretName": "A-1" * 42 + "x", "version": "0" * 31 + "f"}},
    {"palette.scope": "project", "palette.project": "Team A"},
    {"palette.project": "p" * 64},
    {"palette.privateCloudGateway": "g" * 128},
    {"sshKey": {"name": "k", "generate": True}},
    {"sshKey": {"name": "K.e_y-1", "publicKey": RSA_2048}},
    {"sshKey": {"name": "k", "publicKey": ED25519, "generate": False}},
    {"sshKey": {"name": "k", "publicKey": ECDSA}},
    {"sshKey": None},
    {"clusterTypes": []},
    {"clusterTypes": ["iaas"]},
    {"clusterTypes": ["aks", "iaas"], "sshKey": {"name": "k", "publicKey": RSA_2048}},
    {"clusterTypes": ["aks"], "sshKey": {"name": "k", "generate": True}},
    {"clusterTypes": ["iaas"], "sshKey": {"name": "k", "publicKey": ED25519}},
    {"apiKey": {"name": "ci", "user": "admin@example.com", "expiresInDays": 1}},
    {"apiKey": {"name": "n" * 64, "description": "d" * 256, "user": "a@example.com", "expiresInDays": 730}},
    {"apiKey": {"name": "ci", "description": "", "user": "a@example.com", "expiresOn": "2026-01-15"}},
    {"apiKey": {"name": "ci", "user": "a@example.com", "expiresOn": "2028-01-15"}},
    {"apiKey": {"name": "ci", "user": "a@example.com", "expiresOn": "2026-06-30T18:00:00.123456789+02:00"}},
    {"apiKey": {"name": "ci", "user": "a@example.com", "expiresOn": "2026-01-15t12:00:01z"}},
    {"apiKey": None},
]


@pytest.mark.parametrize("changes", GOOD, ids=lambda c: ",".join(c))
def test_good_values_are_accepted(changes: dict[str, Any]) -> None:
    assert isinstance(parse(body(changes)), OnboardingRequest)


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"requestId": DELETE}, "requestId", "is required"),
    ({"requestId": ""}, "requestId", "1-64 characters"),
    ({"requestId": "x" * 65}, "requestId", "1-64 characters"),
    ({"requestId": "DEMO 1001"}, "requestId", "letters, digits, '.', '_' or '-'"),
    ({"requestId": "DEMO-1001\n"}, "requestId", "1-64 characters"),
    ({"requestId": 1001}, "requestId", "expected a string"),
    ({"requestId": None}, "requestId", "expected a string"),
    ({"accountName": "ab"}, "accountName", "3-64 characters"),
    ({"accountName": "a" * 65}, "accountName", "3-64 characters"),
    ({"accountName": "Demo"}, "accountName", "lower-case"),
    ({"accountName": "1demo"}, "accountName", "starting with a letter"),
    ({"accountName": "de_mo"}, "accountName", "lower-case letters, digits or '-'"),
    ({"azure": DELETE}, "azure", "is required"),
    ({"azure": "tenant"}, "azure", "expected an object"),
    ({"azure.tenantId": "not-a-guid"}, "azure.tenantId", "must be a GUID"),
    ({"azure.tenantId": "{" + TENANT + "}"}, "azure.tenantId", "must be a GUID"),
    ({"azure.tenantId": TENANT.replace("-", "")}, "azure.tenantId", "must be a GUID"),
    ({"azure.tenantId": "00000000-0000-0000-0000-000000000000"}, "azure.tenantId", "all-zero"),
    ({"azure.clientId": DELETE}, "azure.clientId", "is required"),
    ({"azure.clientId": 42}, "azure.clientId", "expected a string"),
    (
        {"azure.cloud": "AzureChinaCloud"},
        "azure.cloud",
        "must be one of AzurePublicCloud, AzureUSGovernmentCloud, AzureUSSecretCloud",
    ),
    ({"azure.cloud": None}, "azure.cloud", "must be one of"),
    ({"azure.tenantName": ""}, "azure.tenantName", "1-256 characters"),
    ({"azure.tenantName": "x" * 257}, "azure.tenantName", "1-256 characters"),
    ({"azure.tenantName": "Contoso\nFAKE LOG LINE"}, "azure.tenantName", "line breaks"),
    ({"azure.disableProperties": "yes"}, "azure.disableProperties", "expected a boolean"),
    ({"azure.disableProperties": "true"}, "azure.disableProperties", "expected a boolean"),
    ({"azure.disableProperties": 1}, "azure.disableProperties", "expected a boolean"),
    ({"azure.disableProperties": None}, "azure.disableProperties", "expected a boolean"),
    ({"azure.secret": "generate"}, "azure.secret", "expected an object"),
    ({"azure.secret": {}}, "azure.secret.source", "is required: one of generate, keyVault"),
    ({"azure.secret": {"validityDays": 30}}, "azure.secret.source", "is required"),
    ({"azure.secret": {"source": "vault"}}, "azure.secret.source", "must be one of generate, keyVault"),
    ({"azure.secret": {"source": "inline", "value": SECRET}}, "azure.secret.source", "never in a queue message"),
    ({"azure.secret": {"source": "inline"}}, "azure.secret.source", "never in a queue message"),
    ({"azure.secret": {"source": "generate", "validityDays": 0}}, "azure.secret.validityDays", "from 1 to 730"),
    ({"azure.secret": {"source": "generate", "validityDays": 731}}, "azure.secret.validityDays", "from 1 to 730"),
    ({"azure.secret": {"source": "generate", "validityDays": "180"}}, "azure.secret.validityDays", "an integer"),
    ({"azure.secret": {"source": "generate", "validityDays": 180.0}}, "azure.secret.validityDays", "an integer"),
    ({"azure.secret": {"source": "generate", "validityDays": True}}, "azure.secret.validityDays", "an integer"),
    ({"azure.secret": {"source": "generate", "secretName": "x"}}, "azure.secret.secretName", "unknown field"),
    ({"azure.secret": {"source": "keyVault"}}, "azure.secret.secretName", "is required"),
    (
        {"azure.secret": {"source": "keyVault", "secretName": "my_secret"}},
        "azure.secret.secretName",
        "1-127 letters, digits or '-'",
    ),
    ({"azure.secret": {"source": "keyVault", "secretName": "s" * 128}}, "azure.secret.secretName", "1-127"),
    (
        {"azure.secret": {"source": "keyVault", "secretName": "s", "version": "latest"}},
        "azure.secret.version",
        "32 hex digits",
    ),
    (
        {"azure.secret": {"source": "keyVault", "secretName": "s", "version": "a" * 33}},
        "azure.secret.version",
        "32 hex digits",
    ),
    ({"azure.tlsCert": PEM}, "azure.tlsCert", "only with cloud AzureUSSecretCloud"),
    (
        {"azure.cloud": "AzureUSSecretCloud", "azure.tlsCert": "-----BEGIN CERTIFICATE-----\nnope\n"},
        "azure.tlsCert",
        "PEM certificate",
    ),
    ({"azure.cloud": "AzureUSSecretCloud", "azure.tlsCert": "not a pem"}, "azure.tlsCert", "PEM certificate"),
    ({"azure.clientSecret": SECRET}, "azure.clientSecret", "unknown field"),
    ({"palette": []}, "palette", "expected an object"),
    ({"palette.scope": "global"}, "palette.scope", "must be one of tenant, project"),
    ({"palette.project": ""}, "palette.project", "1-64 characters"),
    ({"palette.project": "p" * 65}, "palette.project", "1-64 characters"),
    ({"palette.project": None}, "palette.project", "expected a string"),
    ({"palette.privateCloudGateway": ""}, "palette.privateCloudGateway", "1-128 characters"),
    ({"palette.privateCloudGateway": "g" * 129}, "palette.privateCloudGateway", "1-128 characters"),
    ({"azure.cloud": "AzureUSGovernmentCloud"}, "palette.privateCloudGateway", "Private Cloud Gateway"),
    ({"palette.uid": "x"}, "palette.uid", "unknown field"),
    ({"sshKey": "ssh-rsa AAAA"}, "sshKey", "expected an object"),
    ({"sshKey": {"generate": True}}, "sshKey.name", "is required"),
    ({"sshKey": {"name": "-key", "generate": True}}, "sshKey.name", "starting with a letter or digit"),
    ({"sshKey": {"name": "k" * 65, "generate": True}}, "sshKey.name", "1-64 characters"),
    ({"sshKey": {"name": "my key", "generate": True}}, "sshKey.name", "letters, digits"),
    ({"sshKey": {"name": "k"}}, "sshKey", "needs either publicKey or generate: true"),
    ({"sshKey": {"name": "k", "generate": False}}, "sshKey", "needs either publicKey or generate: true"),
    ({"sshKey": {"name": "k", "publicKey": RSA_2048, "generate": True}}, "sshKey", "not both"),
    ({"sshKey": {"name": "k", "generate": "yes"}}, "sshKey.generate", "expected a boolean"),
    ({"sshKey": {"name": "k", "publicKey": "ssh-rsa not-base64!"}}, "sshKey.publicKey", "OpenSSH public key"),
    ({"sshKey": {"name": "k", "publicKey": ""}}, "sshKey.publicKey", "OpenSSH public key"),
    ({"sshKey": {"name": "k", "publicKey": RSA_2048 + "\n" + ED25519}}, "sshKey.publicKey", "one OpenSSH"),
    (
        {"sshKey": {"name": "k", "publicKey": "ssh-ed25519 " + RSA_2048.split()[1]}},
        "sshKey.publicKey",
        "OpenSSH public key",
    ),
    ({"sshKey": {"name": "k", "publicKey": DSA}}, "sshKey.publicKey", "DSA keys are not supported"),
    ({"sshKey": {"name": "k", "publicKey": 5}}, "sshKey.publicKey", "expected a string"),
    ({"clusterTypes": "aks"}, "clusterTypes", "expected a list"),
    ({"clusterTypes": None}, "clusterTypes", "expected a list"),
    ({"clusterTypes": ["iaas", "eks"]}, "clusterTypes[1]", "must be one of iaas, aks"),
    ({"clusterTypes": ["iaas", "aks", "iaas"]}, "clusterTypes[2]", "more than once"),
    (
        {"clusterTypes": ["aks"], "sshKey": {"name": "k", "publicKey": ED25519}},
        "sshKey.publicKey",
        "RSA key of at least 2048 bits for clusterTypes aks (this one is ssh-ed25519)",
    ),
    (
        {"clusterTypes": ["aks"], "sshKey": {"name": "k", "publicKey": RSA_1024}},
        "sshKey.publicKey",
        "(this one is RSA 1024 bits)",
    ),
    ({"apiKey": {"user": "a@example.com", "expiresInDays": 5}}, "apiKey.name", "is required"),
    ({"apiKey": {"name": "", "user": "a@example.com", "expiresInDays": 5}}, "apiKey.name", "1-64"),
    ({"apiKey": {"name": "n" * 65, "user": "a@example.com", "expiresInDays": 5}}, "apiKey.name", "1-64"),
    (
        {"apiKey": {"name": "n", "description": "d" * 257, "user": "a@example.com", "expiresInDays": 5}},
        "apiKey.description",
        "at most 256",
    ),
    ({"apiKey": {"name": "n", "expiresInDays": 5}}, "apiKey.user", "is required"),
    ({"apiKey": {"name": "n", "user": "admin", "expiresInDays": 5}}, "apiKey.user", "email address"),
    ({"apiKey": {"name": "n", "user": "admin@localhost", "expiresInDays": 5}}, "apiKey.user", "email address"),
    ({"apiKey": {"name": "n", "user": "a@example.com"}}, "apiKey", "needs either expiresInDays or expiresOn"),
    (
        {"apiKey": {"name": "n", "user": "a@example.com", "expiresInDays": 5, "expiresOn": "2026-02-01"}},
        "apiKey",
        "not both",
    ),
    ({"apiKey": {"name": "n", "user": "a@example.com", "expiresInDays": 0}}, "apiKey.expiresInDays", "1 to 730"),
    ({"apiKey": {"name": "n", "user": "a@example.com", "expiresInDays": 731}}, "apiKey.expiresInDays", "1 to 730"),
    ({"apiKey": {"name": "n", "user": "a@example.com", "expiresInDays": "90"}}, "apiKey.expiresInDays", "an integer"),
    (
        {"apiKey": {"name": "n", "user": "a@example.com", "expiresOn": "2026-01-14"}},
        "apiKey.expiresOn",
        "in the future",
    ),
    (
        {"apiKey": {"name": "n", "user": "a@example.com", "expiresOn": "2026-01-15T11:59:59Z"}},
        "apiKey.expiresOn",
        "in the future",
    ),
    (
        {"apiKey": {"name": "n", "user": "a@example.com", "expiresOn": "2028-01-16"}},
        "apiKey.expiresOn",
        "at most 730 days ahead",
    ),
    ({"apiKey": {"name": "n", "user": "a@example.com", "expiresOn": "31/12/2026"}}, "apiKey.expiresOn", "RFC 3339"),
    (
        {"apiKey": {"name": "n", "user": "a@example.com", "expiresOn": "2026-12-31T10:00:00"}},
        "apiKey.expiresOn",
        "with a UTC offset",
    ),
    ({"apiKey": {"name": "n", "user": "a@example.com", "expiresOn": "2026-02-30"}}, "apiKey.expiresOn", "RFC 3339"),
    (
        {"apiKey": {"name": "n", "user": "a@example.com", "expiresOn": 20261231}},
        "apiKey.expiresOn",
        "expected a string",
    ),
    (
        {"apiKey": {"name": "n", "user": "a@example.com", "expiresInDays": 5, "owner": "x"}},
        "apiKey.owner",
        "unknown field",
    ),
    ({"schemaVersion": 2}, "schemaVersion", "unknown field"),
]


@pytest.mark.parametrize(("changes", "path", "fragment"), BAD, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_value_yields_one_error_at_its_path(changes: dict[str, Any], path: str, fragment: str) -> None:
    errors = errors_of(body(changes))
    assert list(errors) == [path]
    assert fragment in errors[path]


def test_one_error_per_bad_field() -> None:
    raw = {
        "requestId": "bad id",
        "accountName": "X",
        "azure": {"tenantId": "nope", "clientId": CLIENT, "cloud": "Mars", "disableProperties": "no", "extra": 1},
        "palette": {"scope": "everywhere"},
        "clusterTypes": ["aks", "k8s"],
        "sshKey": {"name": "_k", "generate": True},
        "apiKey": {"name": "n", "user": "x", "expiresInDays": 1000},
        "unknown": True,
    }
    assert set(errors_of(raw)) == {
        "requestId",
        "accountName",
        "azure.tenantId",
        "azure.cloud",
        "azure.disableProperties",
        "azure.extra",
        "palette.scope",
        "clusterTypes[1]",
        "sshKey.name",
        "apiKey.user",
        "apiKey.expiresInDays",
        "unknown",
    }


def test_messages_say_what_is_wrong_in_plain_words() -> None:
    errors = errors_of(
        {
            "requestId": 7,
            "accountName": "demo",
            "azure": {"tenantId": TENANT, "clientId": CLIENT, "disableProperties": "yes"},
            "x": 1,
        }
    )
    assert errors == {
        "requestId": "expected a string",
        "azure.disableProperties": "expected a boolean (true or false)",
        "x": "unknown field",
    }


# --- defaults and normalisation ---------------------------------------------------------------


def test_defaults_are_filled() -> None:
    request = parse(minimal())
    assert request.azure.cloud is AzureCloud.PUBLIC
    assert request.azure.tenant_name is None
    assert request.azure.disable_properties is False
    assert request.azure.secret == GeneratedSecret(source="generate", validityDays=180)
    assert request.azure.tls_cert is None
    assert request.palette.scope is PaletteScope.TENANT
    assert request.palette.project == "Default"
    assert request.palette.private_cloud_gateway is None
    assert request.ssh_key is None
    assert request.api_key is None
    assert request.cluster_types == ()
    assert parse(body({"azure.secret": {"source": "generate"}})).azure.secret == GeneratedSecret()


def test_values_are_normalised() -> None:
    request = parse(
        body(
            {
                "azure.tenantId": TENANT.upper(),
                "azure.clientId": "ABCDEF01-2345-4789-8ABC-DEF012345678",
                "clusterTypes": ["aks", "iaas"],
                "sshKey": {"name": "k", "publicKey": f"  {RSA_2048}\n"},
                "apiKey": {"name": "n", "user": "Admin@Example.COM", "expiresOn": "2026-06-30T18:00:00+02:00"},
            }
        )
    )
    assert request.azure.tenant_id == TENANT
    assert request.azure.client_id == "abcdef01-2345-4789-8abc-def012345678"
    assert request.cluster_types == (ClusterType.IAAS, ClusterType.AKS)
    assert request.ssh_key is not None and request.ssh_key.public_key == RSA_2048
    assert request.api_key is not None
    assert request.api_key.user == "Admin@example.com"
    assert request.api_key.expires_on == datetime(2026, 6, 30, 16, 0, tzinfo=UTC)
    wire = json.loads(request.model_dump_json(by_alias=True))
    assert wire["apiKey"]["expiresOn"] == "2026-06-30T16:00:00Z"
    assert wire["clusterTypes"] == ["iaas", "aks"]


def test_models_are_frozen() -> None:
    request = parse(minimal())
    with pytest.raises(ValidationError):
        request.account_name = "other"


# --- the body ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"not json", "is not valid JSON (line 1, column 1)"),
        (b"", "is empty; send the request as a JSON object"),
        (" \n\t", "is empty"),
        (b"\xef\xbb\xbf", "is empty"),
        ("{", "is not valid JSON"),
        ("[]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        ("null", "must be a JSON object"),
        (b"\xff\xfe{}", "must be UTF-8"),
        ('{"requestId": "a", "requestId": "b"}', 'repeats the key "requestId"'),
        ('{"a": NaN}', "is not valid JSON"),
        ('{"a":' * 10_000 + "1" + "}" * 10_000, "nested too deeply"),
        ("[" * 30_000 + "]" * 30_000, "nested too deeply"),
        ("[" * 100_000, "larger than 64 KiB"),
        (b" " * (64 * 1024 + 1), "larger than 64 KiB"),
        (42, "must be a JSON object"),
        ([minimal()], "must be a JSON object"),
    ],
)
def test_body_errors_are_at_the_root(raw: Any, fragment: str) -> None:
    errors = errors_of(raw)
    assert list(errors) == [""]
    assert fragment in errors[""]
    with pytest.raises(RequestValidationError) as caught:
        parse(raw)
    assert str(caught.value) == f"The onboarding request is invalid: {errors['']}"  # no empty path before it


@pytest.mark.parametrize(
    "encode",
    [
        lambda d: json.dumps(d),
        lambda d: json.dumps(d).encode(),
        lambda d: b"\xef\xbb\xbf" + json.dumps(d).encode(),
        lambda d: bytearray(json.dumps(d).encode()),
        lambda d: d,
    ],
    ids=["str", "bytes", "bytes-with-bom", "bytearray", "mapping"],
)
def test_every_body_form_parses(encode: Any) -> None:
    assert parse(encode(minimal())) == parse(minimal())


def test_unknown_keys_are_quoted_and_cut_in_the_path() -> None:
    raw = minimal()
    raw["azure"].update({"k" * 300: 1, "a.b": 2, "clientSecret": SECRET})
    errors = errors_of(raw)
    assert errors == {
        'azure["kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk..."]': "unknown field",
        'azure["a.b"]': "unknown field",
        "azure.clientSecret": "unknown field",
    }


# --- options ----------------------------------------------------------------------------------


def test_us_government_gateway_rule_can_be_lifted_for_self_hosted_palette() -> None:
    raw = body({"azure.cloud": "AzureUSGovernmentCloud"})
    assert list(errors_of(raw)) == ["palette.privateCloudGateway"]
    request = parse(raw, require_pcg_for_us_government=False)
    assert request.palette_environment == "AzureUSGovernmentCloud"


def test_inline_secret_is_accepted_only_when_allowed() -> None:
    raw = body({"azure.secret": {"source": "inline", "value": SECRET}})
    errors = errors_of(raw)
    assert list(errors) == ["azure.secret.source"]
    assert "Key Vault" in errors["azure.secret.source"]
    request = parse(raw, allow_inline_secret=True)
    assert isinstance(request.azure.secret, InlineSecret)
    assert request.azure.secret.value.get_secret_value() == SECRET
    assert request.has_inline_secret


@pytest.mark.parametrize(
    ("secret", "path", "fragment"),
    [
        ({"source": "inline"}, "azure.secret.value", "is required"),
        ({"source": "inline", "value": ""}, "azure.secret.value", "1-1024 characters"),
        ({"source": "inline", "value": "x" * 1025}, "azure.secret.value", "1-1024 characters"),
        ({"source": "inline", "value": 12345678}, "azure.secret.value", "expected a string"),
        ({"source": "inline", "value": SECRET, "hint": "x"}, "azure.secret.hint", "unknown field"),
        ({"source": "magic"}, "azure.secret.source", "must be one of generate, keyVault, inline"),
    ],
)
def test_inline_secret_rules_on_the_http_intake(secret: dict[str, Any], path: str, fragment: str) -> None:
    errors = errors_of(body({"azure.secret": secret}), allow_inline_secret=True)
    assert list(errors) == [path]
    assert fragment in errors[path]


def test_inline_secret_never_shows() -> None:
    raw = body({"azure.secret": {"source": "inline", "value": SECRET}})
    request = parse(raw, allow_inline_secret=True)
    for text in (
        repr(request),
        str(request),
        repr(request.model_dump()),
        request.model_dump_json(),
        request.model_dump_json(by_alias=True),
        json.dumps(request.model_dump(mode="json")),
    ):
        assert SECRET not in text
    # Refused on the queue, bad elsewhere, or bad itself: the value is never in the error.
    for options, changes in (
        ({}, {}),
        ({"allow_inline_secret": True}, {"accountName": "X"}),
        ({"allow_inline_secret": True}, {"azure.secret": {"source": "inline", "value": SECRET * 30}}),
        ({"allow_inline_secret": True}, {"azure.secret": {"source": "inline", "value": SECRET + "\x00"}}),
        ({"allow_inline_secret": True}, {"azure.secret": {"source": "inline", "value": [SECRET]}}),
        ({}, {"azure.secret": SECRET}),
        ({}, {"azure.tenantId": SECRET}),
    ):
        with pytest.raises(RequestValidationError) as caught:
            parse(_merge(raw, changes), **options)
        exc = caught.value
        assert SECRET not in str(exc)
        assert SECRET not in repr(exc.errors)
        assert exc.__cause__ is None and exc.__suppress_context__


def _merge(raw: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(raw)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = merged
        for part in parents:
            node = node[part]
        node[leaf] = value
    return merged


def test_inline_secret_is_replaced_by_a_staged_reference_before_queueing() -> None:
    request = parse(body({"azure.secret": {"source": "inline", "value": SECRET}}), allow_inline_secret=True)
    queued = request.with_staged_secret("palette-staged-0123", "0123456789abcdef0123456789abcdef")
    assert queued.azure.secret == StagedSecret(
        source="staged", secretName="palette-staged-0123", version="0123456789abcdef0123456789abcdef"
    )
    assert not queued.has_inline_secret
    assert parse(queued.model_dump_json(by_alias=True)) == queued
    with pytest.raises(ValidationError):
        request.with_staged_secret("bad_name", "0123456789abcdef0123456789abcdef")


# --- helpers for the pipeline -----------------------------------------------------------------


@pytest.mark.parametrize("cloud", list(AzureCloud))
def test_palette_environment_is_the_cloud_name(cloud: AzureCloud) -> None:
    request = parse(body({"azure.cloud": cloud.value}), require_pcg_for_us_government=False)
    assert request.palette_environment == cloud.value


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, False),
        ({"palette.scope": "project"}, True),
        ({"sshKey": {"name": "k", "generate": True}}, True),
        ({"apiKey": {"name": "n", "user": "a@example.com", "expiresInDays": 5}}, False),
    ],
)
def test_needs_project_uid(changes: dict[str, Any], expected: bool) -> None:
    assert parse(body(changes)).needs_project_uid is expected


@pytest.mark.parametrize(
    ("ssh_key", "key_type", "bits"),
    [
        ({"name": "k", "generate": True}, "ssh-rsa", 4096),
        ({"name": "k", "publicKey": RSA_2048}, "ssh-rsa", 2048),
        ({"name": "k", "publicKey": RSA_1024}, "ssh-rsa", 1024),
        ({"name": "k", "publicKey": ED25519}, "ssh-ed25519", None),
        ({"name": "k", "publicKey": ECDSA}, "ecdsa-sha2-nistp256", None),
    ],
)
def test_ssh_key_type_and_size(ssh_key: dict[str, Any], key_type: str, bits: int | None) -> None:
    request = parse(body({"sshKey": ssh_key}))
    assert request.ssh_key is not None
    assert (request.ssh_key.key_type, request.ssh_key.rsa_bits) == (key_type, bits)


@pytest.mark.parametrize(
    ("api_key", "expected"),
    [
        ({"expiresInDays": 90}, NOW + timedelta(days=90)),
        ({"expiresOn": "2026-12-31"}, datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ({"expiresOn": "2026-12-31T10:00:00-05:00"}, datetime(2026, 12, 31, 15, 0, tzinfo=UTC)),
    ],
)
def test_api_key_expiry_is_utc(api_key: dict[str, Any], expected: datetime) -> None:
    request = parse(body({"apiKey": {"name": "n", "user": "a@example.com", **api_key}}))
    assert request.api_key is not None
    assert request.api_key.expiry(NOW) == expected
    assert request.api_key.expiry(NOW).tzinfo is UTC
    assert request.api_key.expiry(NOW.replace(tzinfo=None)) == expected


def test_expiry_limits_follow_now() -> None:
    raw = body({"apiKey": {"name": "n", "user": "a@example.com", "expiresOn": "2026-03-01"}})
    assert parse(raw, now=datetime(2026, 2, 28, 23, 0, tzinfo=UTC)).api_key is not None
    assert "in the future" in errors_of(raw, now=datetime(2026, 3, 2, tzinfo=UTC))["apiKey.expiresOn"]
    assert "730 days" in errors_of(raw, now=datetime(2024, 2, 29, tzinfo=UTC))["apiKey.expiresOn"]
    assert parse(raw, now=datetime(2024, 3, 1, 12, tzinfo=timezone(timedelta(hours=-3)))).api_key is not None


# --- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_is_stable_across_spelling() -> None:
    plain = minimal()
    spelled_out = {
        "clusterTypes": [],
        "palette": {"project": "Default", "scope": "tenant"},
        "azure": {
            "secret": {"validityDays": 180, "source": "generate"},
            "disableProperties": False,
            "cloud": "AzurePublicCloud",
            "clientId": CLIENT.upper(),
            "tenantId": TENANT,
            "tenantName": None,
        },
        "sshKey": None,
        "accountName": "demo",
        "requestId": "DEMO-1001",
    }
    first = request_fingerprint(parse(json.dumps(plain)))
    assert first == request_fingerprint(parse(json.dumps(spelled_out, indent=2).encode()))
    assert len(first) == 64 and int(first, 16) >= 0
    assert request_fingerprint(parse(body({"clusterTypes": ["aks", "iaas"]}))) == request_fingerprint(
        parse(body({"clusterTypes": ["iaas", "aks"]}))
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"requestId": "DEMO-1002"},
        {"accountName": "demo-2"},
        {"azure.disableProperties": True},
        {"azure.secret": {"source": "generate", "validityDays": 90}},
        {"palette.project": "Other"},
        {"clusterTypes": ["iaas"]},
    ],
)
def test_fingerprint_changes_with_content(changes: dict[str, Any]) -> None:
    assert request_fingerprint(parse(body(changes))) != request_fingerprint(parse(minimal()))


def test_fingerprint_hashes_an_inline_secret_without_seeing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    real = hashlib.sha256

    def spy(data: bytes = b"") -> Any:
        seen.append(bytes(data))
        return real(data)

    def fingerprint(value: str) -> str:
        request = parse(body({"azure.secret": {"source": "inline", "value": value}}), allow_inline_secret=True)
        return request_fingerprint(request)

    monkeypatch.setattr(parsing.hashlib, "sha256", spy)
    first, again, other = fingerprint(SECRET), fingerprint(SECRET), fingerprint(SECRET + "x")
    assert first == again != other
    hash_inputs = [data for data in seen if data.startswith(b"{")]
    assert len(hash_inputs) == 3
    assert all(SECRET.encode() not in data for data in hash_inputs)
    assert all(b'"valueSha256"' in data for data in hash_inputs)


# --- examples ---------------------------------------------------------------------------------


def test_examples_parse() -> None:
    names = ["01-plain.json", "02-ssh-and-api-key.json", "03-bad-credentials.json"]
    plain, ssh_and_api_key, bad_credentials = (parse((EXAMPLES / name).read_bytes()) for name in names)
    for extra in EXAMPLES.glob("*.json"):
        parse(extra.read_bytes())

    assert plain.azure.secret == GeneratedSecret()
    assert plain.palette.scope is PaletteScope.TENANT
    assert plain.ssh_key is None and plain.api_key is None

    assert ssh_and_api_key.ssh_key is not None and ssh_and_api_key.ssh_key.generate
    assert ssh_and_api_key.cluster_types == (ClusterType.AKS,)
    assert ssh_and_api_key.api_key is not None
    assert ssh_and_api_key.api_key.user == "admin@example.com"
    assert ssh_and_api_key.api_key.expires_in_days == 90

    assert bad_credentials.azure.secret == KeyVaultSecret(secretName="wrong-secret-demo")
    assert len({r.request_id for r in (plain, ssh_and_api_key, bad_credentials)}) == 3


def test_models_know_nothing_of_functions_or_the_environment() -> None:
    package = Path(__file__).resolve().parents[2] / "shared" / "models"
    for source in package.glob("*.py"):
        text = source.read_text()
        assert "azure.functions" not in text and "os.environ" not in text, source.name


# --- property-based -------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)

guids = st.uuids().map(str).flatmap(lambda g: st.sampled_from([g, g.upper()]))
texts = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40)


@st.composite
def valid_requests(draw: st.DrawFn, *, inline: bool = False) -> dict[str, Any]:
    """A valid v1 body, with optional fields present or not."""
    cloud = draw(st.sampled_from([None, *(c.value for c in AzureCloud)]))
    azure: dict[str, Any] = {"tenantId": draw(guids), "clientId": draw(guids)}
    if cloud is not None:
        azure["cloud"] = cloud
    if draw(st.booleans()):
        azure["tenantName"] = draw(texts)
    if draw(st.booleans()):
        azure["disableProperties"] = draw(st.booleans())
    if cloud == AzureCloud.US_SECRET and draw(st.booleans()):
        azure["tlsCert"] = PEM
    sources = ["absent", "generate", "keyVault"] + (["inline"] if inline else [])
    source = draw(st.sampled_from(sources))
    if source == "generate":
        azure["secret"] = {"source": "generate"}
        if draw(st.booleans()):
            azure["secret"]["validityDays"] = draw(st.integers(1, 730))
    elif source == "keyVault":
        azure["secret"] = {
            "source": "keyVault",
            "secretName": draw(st.from_regex(r"[A-Za-z0-9-]{1,127}", fullmatch=True)),
        }
        if draw(st.booleans()):
            azure["secret"]["version"] = draw(st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True))
    elif source == "inline":
        azure["secret"] = {"source": "inline", "value": draw(texts)}

    result: dict[str, Any] = {
        "requestId": draw(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)),
        "accountName": draw(st.from_regex(r"[a-z][a-z0-9-]{2,63}", fullmatch=True)),
        "azure": azure,
    }
    if draw(st.booleans()):
        result["operation"] = "onboard"
    if draw(st.booleans()):
        result["recoverDeletedSecrets"] = draw(st.booleans())
    palette: dict[str, Any] = {}
    if draw(st.booleans()):
        palette["scope"] = draw(st.sampled_from(["tenant", "project"]))
    if draw(st.booleans()):
        palette["project"] = draw(texts)
    if cloud == AzureCloud.US_GOVERNMENT or draw(st.booleans()):
        palette["privateCloudGateway"] = draw(texts)
    if palette or draw(st.booleans()):
        result["palette"] = palette

    cluster_types = draw(st.lists(st.sampled_from(["iaas", "aks"]), unique=True))
    if cluster_types or draw(st.booleans()):
        result["clusterTypes"] = cluster_types
    if draw(st.booleans()):
        name = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True))
        keys = [RSA_2048] if "aks" in cluster_types else [RSA_2048, RSA_1024, ED25519, ECDSA]
        if draw(st.booleans()):
            result["sshKey"] = {"name": name, "generate": True}
        else:
            result["sshKey"] = {"name": name, "publicKey": draw(st.sampled_from(keys))}
    if draw(st.booleans()):
        api_key: dict[str, Any] = {
            "name": draw(texts),
            "user": draw(st.sampled_from(["admin@example.com", "Ops.Team@Contoso.onmicrosoft.com"])),
        }
        if draw(st.booleans()):
            api_key["description"] = draw(
                st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=256)
            )
        expiry = draw(st.sampled_from(["days", "date", "datetime"]))
        if expiry == "days":
            api_key["expiresInDays"] = draw(st.integers(1, 730))
        elif expiry == "date":
            api_key["expiresOn"] = draw(st.dates(NOW.date(), (NOW + timedelta(days=730)).date())).isoformat()
        else:
            moment = draw(
                st.datetimes(
                    NOW.replace(tzinfo=None) + timedelta(seconds=1),
                    NOW.replace(tzinfo=None) + timedelta(days=730),
                    timezones=st.just(UTC),
                )
            )
            offset = timezone(timedelta(minutes=draw(st.integers(-12 * 60, 14 * 60))))
            api_key["expiresOn"] = moment.astimezone(offset).isoformat()
        result["apiKey"] = api_key
    return result


@FUZZ
@given(st.one_of(json_values, json_values.map(json.dumps), st.binary(max_size=200), st.text(max_size=200)))
def test_fuzz_any_input_fails_only_with_request_validation_error(raw: Any) -> None:
    try:
        parse(raw, allow_inline_secret=True)
    except RequestValidationError as exc:
        assert exc.errors
        assert len({e.path for e in exc.errors}) == len(exc.errors)


LEAVES = {
    # path: kind of value it holds
    "operation": "str",
    "recoverDeletedSecrets": "bool",
    "requestId": "str",
    "accountName": "str",
    "azure": "object",
    "azure.tenantId": "str",
    "azure.clientId": "str",
    "azure.cloud": "str",
    "azure.tenantName": "str",
    "azure.disableProperties": "bool",
    "azure.tlsCert": "str",
    "azure.secret": "object",
    "azure.secret.validityDays": "int",
    "azure.secret.secretName": "str",
    "azure.secret.version": "str",
    "azure.secret.value": "str",
    "palette": "object",
    "palette.scope": "str",
    "palette.project": "str",
    "palette.privateCloudGateway": "str",
    "clusterTypes": "list",
    "sshKey": "object",
    "sshKey.name": "str",
    "sshKey.publicKey": "str",
    "sshKey.generate": "bool",
    "apiKey": "object",
    "apiKey.name": "str",
    "apiKey.description": "str",
    "apiKey.user": "str",
    "apiKey.expiresInDays": "int",
    "apiKey.expiresOn": "str",
}
WRONG = {
    "str": [5, 1.5, True, [], {}],
    "bool": ["yes", "true", 1, 0, [], {}],
    "int": ["90", 1.5, 90.0, True, [], {}],
    "object": ["x", 5, True, []],
    "list": ["aks", 5, {}, True],
}


def _get(raw: dict[str, Any], path: str) -> tuple[bool, dict[str, Any], str]:
    *parents, leaf = path.split(".")
    node: Any = raw
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return isinstance(node, dict) and leaf in node, node, leaf


@FUZZ
@given(valid_requests(inline=True))
def test_valid_requests_parse_and_round_trip(raw: dict[str, Any]) -> None:
    request = parse(raw, allow_inline_secret=True)
    again = parse(request.model_dump(by_alias=True), allow_inline_secret=True)
    assert again == request
    assert request_fingerprint(again) == request_fingerprint(request)
    if not request.has_inline_secret:
        over_the_wire = parse(request.model_dump_json(by_alias=True, exclude_none=True).encode())
        assert over_the_wire == request
        assert parse(json.dumps(raw)) == request


@FUZZ
@given(valid_requests(inline=True), st.data())
def test_one_field_of_the_wrong_type_is_reported_at_its_path(raw: dict[str, Any], data: st.DataObject) -> None:
    present = [path for path in LEAVES if _get(raw, path)[0]]
    path = data.draw(st.sampled_from(present))
    wrong = data.draw(st.sampled_from(WRONG[LEAVES[path]]))
    _, node, leaf = _get(raw, path)
    node[leaf] = wrong
    errors = errors_of(raw, allow_inline_secret=True)
    assert list(errors) == [path], (path, wrong, errors)


@FUZZ
@given(valid_requests(inline=True), st.data())
def test_any_value_anywhere_fails_cleanly_and_never_echoes_it(raw: dict[str, Any], data: st.DataObject) -> None:
    present = [path for path in LEAVES if _get(raw, path)[0]]
    path = data.draw(st.sampled_from(present))
    marker = "Qz7-" + data.draw(st.text(min_size=12, max_size=40))
    value = data.draw(st.sampled_from([marker, [marker], {"k": marker}, {"source": marker}]))
    _, node, leaf = _get(raw, path)
    node[leaf] = value
    try:
        parse(raw, allow_inline_secret=True)
    except RequestValidationError as exc:
        assert marker not in str(exc)
        assert len({e.path for e in exc.errors}) == len(exc.errors)


# --- names made from the request, and what it may name -----------------------------------------


def test_every_derived_name_is_made_at_parse_time() -> None:
    body = minimal()
    body["apiKey"] = {"name": "!!!", "user": "a@example.com", "expiresInDays": 3}
    names = parse(body).derived_names
    account = body["accountName"]
    assert names.client_secret == f"palette-{account}-client-secret"
    assert names.ssh_private_key == f"palette-{account}-ssh-key"
    assert names.api_key_value == f"palette-{account}-api-key"
    assert names.password_display_name == f"palette-onboarding {account} {body['requestId']}"


def test_the_allowed_prefix_limits_key_vault_sources_but_not_the_accounts_own_name() -> None:
    body = minimal()
    body["azure"]["secret"] = {"source": "keyVault", "secretName": "payroll-db"}
    assert set(errors_of(body, allowed_secret_prefix="ops-")) == {"azure.secret.secretName"}
    body["azure"]["secret"]["secretName"] = "ops-contoso"
    assert parse(body, allowed_secret_prefix="ops-").azure.secret.secret_name == "ops-contoso"  # type: ignore[union-attr]
    body["azure"]["secret"]["secretName"] = f"palette-{body['accountName']}-client-secret"
    parse(body, allowed_secret_prefix="ops-")  # the product's own, as the HTTP intake queues it


# --- schema v1's operation field, and the offboarding request -----------------------------------


def test_operation_is_onboard_by_default_and_the_added_fields_keep_old_fingerprints() -> None:
    plain = parse(minimal())
    spelled = parse(body({"operation": "onboard", "recoverDeletedSecrets": False}))
    assert plain.operation == "onboard" and not plain.recover_deleted_secrets
    assert request_fingerprint(plain) == request_fingerprint(spelled)
    assert request_fingerprint(parse(body({"recoverDeletedSecrets": True}))) != request_fingerprint(plain)


@pytest.mark.parametrize(("operation", "fragment"), [
    ("offboard", "DELETE /api/accounts/{name}"), ("rotate", "must be onboard (the default) or offboard"),
    ("", "must be onboard"), (5, "must be onboard")])
def test_an_onboarding_body_with_another_operation_is_refused_naming_the_field(operation: Any, fragment: str) -> None:
    errors = errors_of(body({"operation": operation}))
    assert list(errors) == ["operation"] and fragment in errors["operation"]


def test_an_offboarding_body_is_told_only_where_it_goes() -> None:
    """Measured against the onboarding schema it lacks azure and has unknown fields; none of that
    is reported, only the pointer."""
    errors = errors_of({"operation": "offboard", "requestId": "OFF-1", "accountName": "some-account",
                        "removeSshKey": True})
    assert list(errors) == ["operation"] and "DELETE /api/accounts/{name}" in errors["operation"]


def test_recover_deleted_secrets_must_be_a_boolean() -> None:
    assert list(errors_of(body({"recoverDeletedSecrets": "true"}))) == ["recoverDeletedSecrets"]


@st.composite
def valid_offboardings(draw: st.DrawFn) -> dict[str, Any]:
    result: dict[str, Any] = {
        "operation": "offboard",
        "requestId": draw(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)),
        "accountName": draw(st.from_regex(r"[a-z][a-z0-9-]{2,63}", fullmatch=True)),
    }
    if draw(st.booleans()):
        result["palette"] = {"scope": draw(st.sampled_from(["tenant", "project"]))}
        if draw(st.booleans()):
            result["palette"]["project"] = draw(texts)
    for flag in ("removeSshKey", "removeApiKey"):
        if draw(st.booleans()):
            result[flag] = draw(st.booleans())
    return result


OFFBOARDING_LEAVES = {"requestId": "str", "accountName": "str", "palette": "object", "palette.scope": "str",
                      "palette.project": "str", "removeSshKey": "bool", "removeApiKey": "bool"}


@FUZZ
@given(valid_offboardings(), st.data())
def test_offboarding_bodies_parse_and_one_wrong_field_is_reported_at_its_path(raw: dict[str, Any],
                                                                             data: st.DataObject) -> None:
    from shared.offboarding.models import fingerprint, parse_offboarding

    request = parse_offboarding(raw)
    assert parse_offboarding(json.dumps(raw)) == request
    assert fingerprint(parse_offboarding(request.model_dump(by_alias=True))) == fingerprint(request)
    present = [path for path in OFFBOARDING_LEAVES if _get(raw, path)[0]]
    path = data.draw(st.sampled_from(present))
    wrong = data.draw(st.sampled_from(WRONG[OFFBOARDING_LEAVES[path]]))
    _, node, leaf = _get(raw, path)
    node[leaf] = wrong
    with pytest.raises(RequestValidationError) as refused:
        parse_offboarding(raw)
    assert [e.path for e in refused.value.errors] == [path]


@FUZZ
@given(st.one_of(json_values, json_values.map(json.dumps), st.binary(max_size=200), st.text(max_size=200)))
def test_fuzz_any_input_to_the_offboarding_parser_fails_only_with_request_validation_error(raw: Any) -> None:
    from shared.offboarding.models import parse_offboarding

    try:
        parse_offboarding(raw)
    except RequestValidationError as exc:
        assert exc.errors

"""The onboarding request, schema version 1, as frozen pydantic models.

Field names are snake_case in Python and camelCase on the wire; unknown fields are rejected at
every level. Rules that span fields are checked where the field that has to change lives, so the
error path points at it (``palette.privateCloudGateway``, ``sshKey.publicKey``). Build instances
through :func:`shared.models.parse_request`, which turns validation failures into field errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from shared.models.fields import (
    GENERATED_SSH_KEY_BITS,
    AccountName,
    Days,
    Description,
    Email,
    Guid,
    KeyVaultSecretName,
    KeyVaultVersion,
    PemCertificate,
    RequestId,
    Rfc3339,
    SecretValue,
    SshKeyName,
    SshPublicKey,
    Text64,
    Text128,
    Text256,
    as_utc,
    describe_ssh_key,
    end_of,
    expiry_problem,
    one_of,
    options_of,
    rule_error,
)

if TYPE_CHECKING:
    from pydantic import ValidationInfo, ValidatorFunctionWrapHandler

    from shared.credentials import SecretKind

MIN_AKS_RSA_BITS = 2048


@dataclass(frozen=True)
class DerivedNames:
    """Key Vault secret names (see :func:`shared.credentials.secret_name`) and the Graph password
    display name of one request."""

    client_secret: str
    ssh_private_key: str
    api_key_value: str
    password_display_name: str


class AzureCloud(StrEnum):
    """The Azure cloud of the app registration; the values are Palette's ``azureEnvironment`` names."""

    PUBLIC = "AzurePublicCloud"
    US_GOVERNMENT = "AzureUSGovernmentCloud"
    US_SECRET = "AzureUSSecretCloud"


class PaletteScope(StrEnum):
    """Where the cloud account lives in Palette: the tenant (the guide's choice) or one project."""

    TENANT = "tenant"
    PROJECT = "project"


class ClusterType(StrEnum):
    """Kinds of cluster the account is meant for; AKS constrains the SSH key to RSA."""

    IAAS = "iaas"
    AKS = "aks"


class WireModel(BaseModel):
    """Base of every request model: frozen, camelCase on the wire, unknown fields rejected.

    ``hide_input_in_errors`` is a second fence: the parser never shows pydantic's errors, but if one
    escaped elsewhere it must not carry a secret.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        hide_input_in_errors=True,
    )


# --- azure.secret -----------------------------------------------------------------------------


class GeneratedSecret(WireModel):
    """Create a new client secret on the app registration (Graph ``addPassword``)."""

    source: Literal["generate"] = "generate"
    validity_days: Days = 180


class KeyVaultSecret(WireModel):
    """Use a client secret already stored in Key Vault (latest version unless ``version`` is given)."""

    source: Literal["keyVault"] = "keyVault"
    secret_name: KeyVaultSecretName
    version: KeyVaultVersion | None = None


class InlineSecret(WireModel):
    """A raw client secret, accepted on the HTTPS intake only, which stores it in Key Vault at once."""

    source: Literal["inline"] = "inline"
    value: SecretValue


class StagedSecret(WireModel):
    """An inline secret the HTTPS intake keeps under a name of its own (never a name rotation,
    drift or offboarding read) until the request has passed its checks; the form it is queued in.
    The check step accepts only the staged secret of the request itself."""

    source: Literal["staged"] = "staged"
    secret_name: KeyVaultSecretName
    version: KeyVaultVersion


SECRET_SOURCES = ("generate", "keyVault", "inline", "staged")
#: The sources a request's author chooses from (``staged`` is what the intake makes of ``inline``).
PUBLIC_SECRET_SOURCES = ("generate", "keyVault", "inline")
SecretSpec = Annotated[GeneratedSecret | KeyVaultSecret | InlineSecret | StagedSecret, Field(discriminator="source")]

INLINE_REFUSED = (
    "raw client secrets are accepted only by the HTTPS intake, never in a queue message: "
    "store the secret in Key Vault and send source keyVault with its secretName"
)


class PermissionProfile(StrEnum):
    """Which of Palette's published Azure roles apply (``shared/permissions``)."""

    IAAS = "iaas"
    AKS = "aks"


class Placement(StrEnum):
    """Static: clusters go into a resource group and virtual network made beforehand; dynamic:
    Palette makes them."""

    STATIC = "static"
    DYNAMIC = "dynamic"


_SUBSCRIPTION = r"/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_RESOURCE_GROUP = _SUBSCRIPTION + r"/resourceGroups/[-\w._()]{1,90}"
_VIRTUAL_NETWORK = _RESOURCE_GROUP + r"/providers/Microsoft\.Network/virtualNetworks/[A-Za-z0-9][-\w.]{0,79}"
ARM_SCOPE_PATTERN = re.compile(f"(?:{_VIRTUAL_NETWORK}|{_RESOURCE_GROUP}|{_SUBSCRIPTION})", re.IGNORECASE)


def _arm_scope(value: Any) -> str:
    if not isinstance(value, str) or ARM_SCOPE_PATTERN.fullmatch(value) is None:
        raise rule_error("must be an Azure Resource Manager id: /subscriptions/<id>, "
                         "/subscriptions/<id>/resourceGroups/<name>, or the id of a virtual network in one")
    return value


def _no_repeats(value: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse an entry given twice (ids compare without case, as Azure's and Palette's do)."""
    seen: set[str] = set()
    for index, item in enumerate(value):
        if item.lower() in seen:
            raise rule_error("is listed more than once", at=(index,))
        seen.add(item.lower())
    return value


ArmScope = Annotated[str, BeforeValidator(_arm_scope)]


class PermissionsSpec(WireModel):
    """Check the service principal's Azure role and deny assignments against what Palette asks of
    it, before anything is made (addition to v1: ``azure.permissions``)."""

    profile: Annotated[PermissionProfile, one_of(PermissionProfile)]
    placement: Annotated[Placement, one_of(Placement)]
    scopes: Annotated[tuple[ArmScope, ...], Field(min_length=1, max_length=10), AfterValidator(_no_repeats)]
    """Subscriptions or resource groups clusters go to; a virtual network's id for the roles
    Palette places on the network (without one, those are checked at the other scopes)."""
    enforce: bool = Field(default=True, strict=True)


class AzureSpec(WireModel):
    """The app registration to onboard and how to get its client secret."""

    tenant_id: Guid
    client_id: Guid
    cloud: Annotated[AzureCloud, one_of(AzureCloud)] = AzureCloud.PUBLIC
    tenant_name: Text256 | None = None
    disable_properties: bool = Field(default=False, strict=True)
    secret: SecretSpec = Field(default_factory=GeneratedSecret)
    tls_cert: PemCertificate | None = None
    """Addition to the v1 table: Palette's ``tls.cert``, for AzureUSSecretCloud only."""
    permissions: PermissionsSpec | None = None

    @field_validator("secret", mode="wrap")
    @classmethod
    def _refuse_inline(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        # Checked before the union so that a refused inline secret yields this one error, not also
        # complaints about its value.
        if not options_of(info).allow_inline_secret and _is_inline(value):
            raise rule_error(INLINE_REFUSED, at=("source",))
        return handler(value)

    @field_validator("tls_cert")
    @classmethod
    def _tls_cert_needs_secret_cloud(cls, value: str | None, info: ValidationInfo) -> str | None:
        cloud = info.data.get("cloud")
        if value is not None and cloud is not None and cloud is not AzureCloud.US_SECRET:
            raise rule_error(f"is allowed only with cloud {AzureCloud.US_SECRET.value}")
        return value


def _is_inline(value: Any) -> bool:
    if isinstance(value, InlineSecret):
        return True
    return isinstance(value, Mapping) and value.get("source") == "inline"


# --- palette, sshKey, apiKey ------------------------------------------------------------------


class PaletteSpec(WireModel):
    """Where and how the account is registered in Palette."""

    scope: Annotated[PaletteScope, one_of(PaletteScope)] = PaletteScope.TENANT
    project: Text64 = "Default"
    private_cloud_gateway: Text128 | None = None


class SshKeySpec(WireModel):
    """An SSH public key to upload to the project, or a request to generate an RSA pair."""

    name: SshKeyName
    public_key: SshPublicKey | None = None
    generate: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SshKeySpec:
        if self.public_key is not None and self.generate:
            raise rule_error("give either publicKey or generate: true, not both")
        if self.public_key is None and not self.generate:
            raise rule_error("needs either publicKey or generate: true")
        return self

    @property
    def key_type(self) -> str:
        """``ssh-rsa``, ``ssh-ed25519``, ``ecdsa-sha2-nistp256``...; ``ssh-rsa`` when generated."""
        if self.public_key is None:
            return "ssh-rsa"
        return describe_ssh_key(self.public_key)[0]

    @property
    def rsa_bits(self) -> int | None:
        """Size of an RSA key in bits (4096 when generated); None for other key types."""
        if self.public_key is None:
            return GENERATED_SSH_KEY_BITS
        return describe_ssh_key(self.public_key)[1]


class ApiKeySpec(WireModel):
    """A Palette API key to create for ``user``; it expires after N days or on a given date."""

    name: Text64
    description: Description | None = None
    user: Email
    expires_in_days: Days | None = None
    expires_on: Rfc3339 | None = None

    @field_validator("expires_on")
    @classmethod
    def _expires_within_limits(cls, value: date | None, info: ValidationInfo) -> date | None:
        if value is not None:
            problem = expiry_problem(value, options_of(info).now)
            if problem:
                raise rule_error(problem)
        return value

    @model_validator(mode="after")
    def _exactly_one_expiry(self) -> ApiKeySpec:
        if self.expires_in_days is not None and self.expires_on is not None:
            raise rule_error("give either expiresInDays or expiresOn, not both")
        if self.expires_in_days is None and self.expires_on is None:
            raise rule_error("needs either expiresInDays or expiresOn")
        return self

    def expiry(self, now: datetime) -> datetime:
        """When the key stops working, in UTC: ``now`` plus the days, or the end of ``expiresOn``.

        A naive ``now`` is taken as UTC.
        """
        if self.expires_on is not None:
            return end_of(self.expires_on)
        return as_utc(now) + timedelta(days=self.expires_in_days or 0)


# --- clusterTypes -----------------------------------------------------------------------------


def _as_list(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return value
    raise rule_error("expected a list")


def _unique(value: tuple[ClusterType, ...]) -> tuple[ClusterType, ...]:
    # The order carries no meaning; a fixed order makes equal requests compare and hash equal.
    for index, item in enumerate(value):
        if item in value[:index]:
            raise rule_error("is listed more than once", at=(index,))
    return tuple(member for member in ClusterType if member in value)


ClusterTypes = Annotated[
    tuple[Annotated[ClusterType, one_of(ClusterType)], ...],
    BeforeValidator(_as_list),
    AfterValidator(_unique),
]


class RotationSpec(WireModel):
    """What rotation may change besides the cloud account (addition to v1: ``rotation``)."""

    also_update: Annotated[tuple[Text128, ...], Field(min_length=1, max_length=20), AfterValidator(_no_repeats)]
    """Other Palette objects holding this principal's secret that rotation may update: Azure backup
    locations, by name or uid, in the account's scope."""


# --- the request ------------------------------------------------------------------------------


class OnboardingRequest(WireModel):
    """One onboarding request, schema version 1 (see the package docstring for the rules)."""

    operation: str = "onboard"
    request_id: RequestId
    account_name: AccountName
    azure: AzureSpec
    palette: PaletteSpec = Field(default_factory=PaletteSpec, validate_default=True)
    # Declared before sshKey: the AKS rule on sshKey reads it.
    cluster_types: ClusterTypes = ()
    ssh_key: SshKeySpec | None = None
    api_key: ApiKeySpec | None = None
    # A soft-deleted secret of a name this request writes blocks it; only the request may say to
    # bring that secret back (its old versions return as history, a new version is written on top).
    recover_deleted_secrets: bool = Field(default=False, strict=True)
    rotation: RotationSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_an_offboarding(cls, data: Any) -> Any:
        """An offboarding body is answered with where it goes, and nothing else: measured against
        the onboarding schema its every field would be wrong (``azure`` missing, ``removeSshKey``
        unknown), which tells its author nothing."""
        if isinstance(data, dict) and data.get("operation") == "offboard":
            raise rule_error("offboard requests carry only requestId, accountName, palette, removeSshKey and "
                             "removeApiKey: put them on the queue or use DELETE /api/accounts/{name}",
                             at=("operation",))
        return data

    @field_validator("operation", mode="before")
    @classmethod
    def _onboarding(cls, value: Any) -> str:
        if value == "onboard":
            return value
        raise rule_error("must be onboard (the default) or offboard")

    @field_validator("palette")
    @classmethod
    def _us_government_needs_gateway(cls, value: PaletteSpec, info: ValidationInfo) -> PaletteSpec:
        azure = info.data.get("azure")
        if (
            isinstance(azure, AzureSpec)
            and azure.cloud is AzureCloud.US_GOVERNMENT
            and value.private_cloud_gateway is None
            and options_of(info).require_pcg_for_us_government
        ):
            raise rule_error(
                f"is required for cloud {AzureCloud.US_GOVERNMENT.value} on SaaS Palette: "
                "give the name or uid of a Private Cloud Gateway",
                at=("privateCloudGateway",),
            )
        return value

    @field_validator("ssh_key")
    @classmethod
    def _aks_needs_rsa(cls, value: SshKeySpec | None, info: ValidationInfo) -> SshKeySpec | None:
        cluster_types = info.data.get("cluster_types") or ()
        if value is None or value.public_key is None or ClusterType.AKS not in cluster_types:
            return value
        bits = value.rsa_bits
        if bits is None or bits < MIN_AKS_RSA_BITS:
            found = f"RSA {bits} bits" if bits is not None else value.key_type
            raise rule_error(
                f"must be an RSA key of at least {MIN_AKS_RSA_BITS} bits for clusterTypes aks (this one is {found})",
                at=("publicKey",),
            )
        return value

    @model_validator(mode="after")
    def _names_derive(self, info: ValidationInfo) -> OnboardingRequest:
        # Every name made from the request is made here once, so a request that passes parsing
        # can never fail later on a name (a Key Vault secret, a Graph display name).
        from shared.credentials import MAX_DISPLAY_NAME_CHARS

        names = self.derived_names
        if len(names.password_display_name) > MAX_DISPLAY_NAME_CHARS:
            raise rule_error("is too long to name a Graph password after", at=("requestId",))
        secret = self.azure.secret
        prefix = options_of(info).allowed_secret_prefix
        if (isinstance(secret, KeyVaultSecret) and prefix and not secret.secret_name.startswith(prefix)
                and secret.secret_name.lower() != names.client_secret):
            raise rule_error(f"must start with {prefix!r}: this deployment accepts only Key Vault secrets "
                             "named so", at=("azure", "secret", "secretName"))
        return self

    @property
    def derived_names(self) -> DerivedNames:
        """The names the onboarding gives what it makes for this request."""
        from shared.credentials import SecretKind, password_display_name, secret_name

        return DerivedNames(
            client_secret=secret_name(self.account_name, SecretKind.CLIENT_SECRET),
            ssh_private_key=secret_name(self.account_name, SecretKind.SSH_KEY),
            api_key_value=secret_name(self.account_name, SecretKind.API_KEY),
            password_display_name=password_display_name(self.account_name, self.request_id),
        )

    @property
    def secrets_written(self) -> tuple[SecretKind, ...]:
        """The kinds of Key Vault secret this request writes a version of (what it generates)."""
        from shared.credentials import SecretKind

        written = []
        if isinstance(self.azure.secret, GeneratedSecret | InlineSecret | StagedSecret):
            written.append(SecretKind.CLIENT_SECRET)
        if self.ssh_key is not None and self.ssh_key.generate:
            written.append(SecretKind.SSH_KEY)
        if self.api_key is not None:
            written.append(SecretKind.API_KEY)
        return tuple(written)

    @property
    def palette_environment(self) -> str:
        """The ``azureEnvironment`` value for Palette: our cloud names are Palette's own."""
        return self.azure.cloud.value

    @property
    def needs_project_uid(self) -> bool:
        """True when a Palette project must be looked up: a project-scoped account or an SSH key
        (SSH keys live in a project)."""
        return self.palette.scope is PaletteScope.PROJECT or self.ssh_key is not None

    @property
    def has_inline_secret(self) -> bool:
        """True while the request carries a raw client secret (HTTP intake, before Key Vault)."""
        return isinstance(self.azure.secret, InlineSecret)

    def with_staged_secret(self, secret_name: str, version: str) -> OnboardingRequest:
        """A copy whose client secret is the staged one: what the HTTP intake queues after keeping
        an inline secret in Key Vault under its staging name, so no raw secret ever goes on the
        queue.

        Raises
        ------
        pydantic.ValidationError
            ``secret_name`` or ``version`` breaks the Key Vault naming rules.
        """
        secret = StagedSecret.model_validate({"source": "staged", "secretName": secret_name, "version": version})
        return self.model_copy(update={"azure": self.azure.model_copy(update={"secret": secret})})

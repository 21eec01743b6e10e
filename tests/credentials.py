"""A TokenCredential for the client and stand-in tests: the identity stand-in's tokens, as a
managed identity would get them, and a record of what the SDK asked for."""

from __future__ import annotations

from typing import Any

from azure.core.credentials import AccessToken

from devstack.tokens import issue_token


class StandInCredential:
    """Tokens for the audience the scope names (or a fixed ``audience``), for ``subject`` (the
    token's oid) in ``tenant`` always, as a managed identity's: the tenant the SDK names after a
    challenge is recorded, not followed."""

    def __init__(self, *, tenant: str, subject: str = "test-principal", audience: str | None = None,
                 lifetime_seconds: int = 3600) -> None:
        self.tenant, self.subject, self.audience = tenant, subject, audience
        self.lifetime_seconds = lifetime_seconds
        #: Each ask: the scopes and the tenant_id the SDK passed (None when it passed none).
        self.asks: list[tuple[tuple[str, ...], str | None]] = []
        self.tokens: list[str] = []

    @property
    def scopes(self) -> list[tuple[str, ...]]:
        return [scopes for scopes, _ in self.asks]

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  **kwargs: Any) -> AccessToken:
        self.asks.append((scopes, tenant_id))
        token, expires_on = issue_token(audience=self.audience or scopes[0].removesuffix("/.default"),
                                        subject=self.subject, tenant_id=self.tenant,
                                        lifetime_seconds=self.lifetime_seconds)
        self.tokens.append(token)
        return AccessToken(token, expires_on)

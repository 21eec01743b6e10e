"""The naming and ownership rules of shared.credentials: pure logic, no stack needed."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.credentials import (
    SecretKind,
    is_product_password,
    is_secret_of,
    made_by_product,
    made_by_request,
    ownership_annotations,
    parse_secret_name,
    password_display_name,
    secret_name,
    secret_tags,
)

ACCOUNTS = st.from_regex(r"[a-z][a-z0-9-]{2,63}", fullmatch=True)
KINDS = st.sampled_from(list(SecretKind))


def test_names_follow_the_documented_scheme() -> None:
    assert secret_name("contoso-prod", SecretKind.CLIENT_SECRET) == "palette-contoso-prod-client-secret"
    assert secret_name("contoso-prod", SecretKind.SSH_KEY) == "palette-contoso-prod-ssh-key"
    assert secret_name("contoso-prod", SecretKind.API_KEY) == "palette-contoso-prod-api-key"


@pytest.mark.parametrize(("one", "two"), [
    # The collision the old scheme had: account bbb-ssh-ccc's client secret and account bbb's SSH
    # key named ccc-client-secret. Key names are no longer part of the secret name.
    (("bbb-ssh-ccc", SecretKind.CLIENT_SECRET), ("bbb", SecretKind.SSH_KEY)),
    # An account whose name ends like a kind.
    (("acct-ssh", SecretKind.API_KEY), ("acct", SecretKind.SSH_KEY)),
    (("acct-client", SecretKind.CLIENT_SECRET), ("acct-client-secret", SecretKind.CLIENT_SECRET)),
    (("a-api", SecretKind.SSH_KEY), ("a-api-key-ssh", SecretKind.SSH_KEY)),
    (("xxx-ssh-key", SecretKind.CLIENT_SECRET), ("xxx", SecretKind.SSH_KEY)),
    (("one-api-key", SecretKind.SSH_KEY), ("one", SecretKind.API_KEY)),
])
def test_adversarial_pairs_never_share_a_name(one: tuple[str, SecretKind], two: tuple[str, SecretKind]) -> None:
    assert secret_name(*one) != secret_name(*two)
    assert parse_secret_name(secret_name(*one)) == one
    assert parse_secret_name(secret_name(*two)) == two


@given(account=ACCOUNTS, kind=KINDS)
def test_every_name_is_a_valid_key_vault_name_and_decodes_back(account: str, kind: SecretKind) -> None:
    name = secret_name(account, kind)
    assert re.fullmatch(r"[0-9a-z-]{1,127}", name)
    assert parse_secret_name(name) == (account, kind)
    assert parse_secret_name(name.upper()) == (account, kind)  # Key Vault names ignore case


@given(first=st.tuples(ACCOUNTS, KINDS), second=st.tuples(ACCOUNTS, KINDS))
def test_no_two_different_pairs_map_to_one_name(first: tuple[str, SecretKind], second: tuple[str, SecretKind]) -> None:
    if first != second:
        assert secret_name(*first).lower() != secret_name(*second).lower()


@pytest.mark.parametrize("name", ["", "palette-", "palette-ab-client-secret", "other-acct-client-secret",
                                  "palette-acct-password", "palette-Acct-ssh", "palette--x-api-key"])
def test_other_names_are_not_product_names(name: str) -> None:
    assert parse_secret_name(name) is None


@pytest.mark.parametrize("account", ["Bad", "ab", "a" * 65, "1abc", "acct_1", ""])
def test_an_invalid_account_name_never_makes_a_secret_name(account: str) -> None:
    with pytest.raises(ValueError, match="account name"):
        secret_name(account, SecretKind.CLIENT_SECRET)


def test_tags_say_who_made_a_secret_and_for_what() -> None:
    tags = secret_tags("acct-one", SecretKind.SSH_KEY, request_id="T-1", tenant_id="t", client_id="c", empty="")
    assert "empty" not in tags
    assert is_secret_of(tags, "acct-one", SecretKind.SSH_KEY)
    assert not is_secret_of(tags, "acct-one", SecretKind.CLIENT_SECRET)
    assert not is_secret_of(tags, "acct-two", SecretKind.SSH_KEY)
    assert not is_secret_of({**tags, "managed-by": "someone-else"}, "acct-one", SecretKind.SSH_KEY)


def test_annotations_prove_authorship_by_product_and_by_request() -> None:
    annotations = {**ownership_annotations("T-1"), "scope": "tenant"}
    assert made_by_product(annotations) and made_by_request(annotations, "T-1")
    assert not made_by_request(annotations, "T-2")
    assert not made_by_product({"scope": "tenant"})
    assert not made_by_request({"palette-onboarding/request-id": "T-1"}, "T-1")  # no managed-by marker


def test_password_display_names_carry_account_and_request() -> None:
    name = password_display_name("acct-one", "T-1")
    assert name == "palette-onboarding acct-one T-1"
    assert is_product_password(name) and not is_product_password("hand made") and not is_product_password(None)


def test_public_key_fingerprints_are_openssh_sha256_and_ignore_the_comment() -> None:
    from shared.credentials import public_key_fingerprint

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    expected = "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"  # what ssh-keygen -lf prints for it
    assert public_key_fingerprint(key) == expected == public_key_fingerprint(key + " someone@host")
    assert public_key_fingerprint("ssh-ed25519") == public_key_fingerprint("ssh-rsa !!notbase64") == ""

"""Azure Resource Manager's errors as Microsoft.Authorization answers them.

Every body is ARM's ``{"error": {"code", "message"}}``; azure-mgmt-core reads it (``ARMErrorFormat``)
into ``HttpResponseError.error.code`` and the message clients show. Codes and wording are copied
from what ARM answers where it was found (``AuthorizationFailed``, the unsupported-filter message,
``SubscriptionNotFound``, ``ResourceGroupNotFound``, ``RoleAssignmentExists``); the others are
marked *guessed* in ``devstack/COVERAGE.md``.
"""

from __future__ import annotations

from devstack.httpbase import HttpError


class ArmError(HttpError):
    """An error in ARM's wire form."""


class BadRequest(ArmError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


class MissingApiVersion(BadRequest):
    def __init__(self) -> None:
        super().__init__("MissingApiVersionParameter",
                         "The api-version query parameter (?api-version=) is required for all requests.")


class InvalidApiVersion(BadRequest):
    def __init__(self, version: str, resource_type: str, supported: tuple[str, ...]) -> None:
        listed = "', '".join(supported)
        super().__init__("InvalidApiVersionParameter",
                         f"The api-version '{version}' is invalid. The supported versions for resource type "
                         f"'Microsoft.Authorization/{resource_type}' are '{listed}'.")


class InvalidScope(BadRequest):
    def __init__(self, scope: str) -> None:
        super().__init__("InvalidScope", f"The scope '{scope}' is not valid for this operation.")


class InvalidSubscriptionId(BadRequest):
    def __init__(self, subscription_id: str) -> None:
        super().__init__("InvalidSubscriptionId",
                         f"The provided subscription identifier '{subscription_id}' is malformed or invalid.")


class UnsupportedRoleAssignmentFilter(BadRequest):
    """ARM's words (Azure/azure-rest-api-specs#28255) for a role assignment ``$filter`` it does not take."""

    def __init__(self, text: str) -> None:
        super().__init__("UnsupportedQuery",
                         f"The filter '{text}' is not supported. Supported filters are either 'atScope()' or "
                         "'principalId eq '{value}' or assignedTo('{value}')'.")


class UnsupportedFilter(BadRequest):
    def __init__(self, text: str, supported: str) -> None:
        super().__init__("UnsupportedQuery",
                         f"The filter '{text}' is not supported. Supported filters are {supported}.")


class Unauthenticated(ArmError):
    """401 with the challenge ARM sends, which azure-mgmt-core's policy reads only for CAE claims."""

    def __init__(self, code: str, message: str, *, authority: str, description: str) -> None:
        challenge = (f'Bearer authorization_uri="{authority}", error="invalid_token", '
                     f'error_description="{description}"')
        super().__init__(401, code, message, headers={"WWW-Authenticate": challenge})


class AuthorizationFailed(ArmError):
    """403: the caller holds no role that grants ``action`` at ``scope`` (ARM's wording)."""

    def __init__(self, caller: str, action: str, scope: str) -> None:
        super().__init__(403, "AuthorizationFailed",
                         f"The client '{caller}' with object id '{caller}' does not have authorization to perform "
                         f"action '{action}' over scope '{scope}' or the scope is invalid. If access was recently "
                         "granted, please refresh your credentials.")


class SubscriptionNotFound(ArmError):
    def __init__(self, subscription_id: str) -> None:
        super().__init__(404, "SubscriptionNotFound", f"The subscription '{subscription_id}' could not be found.")


class ResourceGroupNotFound(ArmError):
    def __init__(self, name: str) -> None:
        super().__init__(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")


class RoleAssignmentNotFound(ArmError):
    def __init__(self, name: str) -> None:
        super().__init__(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")


class RoleDefinitionNotFound(ArmError):
    def __init__(self, name: str) -> None:
        super().__init__(404, "RoleDefinitionDoesNotExist",
                         f"The specified role definition with ID '{name}' does not exist.")


class DenyAssignmentNotFound(ArmError):
    def __init__(self, name: str) -> None:
        super().__init__(404, "DenyAssignmentNotFound", f"The deny assignment '{name}' is not found.")


class RoleAssignmentExists(ArmError):
    def __init__(self) -> None:
        super().__init__(409, "RoleAssignmentExists", "The role assignment already exists.")


class RoleDefinitionNameExists(ArmError):
    def __init__(self, role_name: str) -> None:
        super().__init__(409, "RoleDefinitionWithSameNameExists",
                         f"A custom role with the same name '{role_name}' already exists in this directory. Use a "
                         "different name.")

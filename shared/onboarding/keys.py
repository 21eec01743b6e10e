"""The keys an onboarding records under in its request's row: its results (what the state route
shows; keys starting with "_" are internal and hidden) and what it made (:mod:`shared.made`)."""

ACCOUNT_UID = "accountUid"
ACCOUNT_ACTION = "accountAction"
PROJECT_UID = "projectUid"
OVERLORD_UID = "privateCloudGatewayUid"
USER_UID = "apiKeyUserUid"
SSH_KEY_UID = "sshKeyUid"
SSH_KEY_OWNED = "sshKeyOwned"
API_KEY_UID = "apiKeyUid"
GRAPH_KEY_ID = "graphKeyId"
SECRET_ID = "keyVaultSecretId"
SECRET_EXPIRES_ON = "secretExpiresOn"
SSH_SECRET_ID = "sshPrivateKeySecretId"
API_KEY_SECRET_ID = "apiKeySecretId"
API_KEY_EXPIRES_ON = "apiKeyExpiresOn"
APP_OBJECT_ID = "_appObjectId"
#: What the check found of the principal's Azure permissions (``azure.permissions``), as JSON, for
#: the ``validated`` event ("_": kept out of the state's public view, which has the step's detail).
PERMISSIONS = "_azurePermissions"

# What the onboarding makes, by the keys its fences record it under (shared.made).
PASSWORD = "password"
ACCOUNT = "account"
SSH_KEY = "sshKey"
API_KEY = "apiKey"
CLIENT_SECRET_VERSION = "secret:client-secret"
SSH_KEY_VERSION = "secret:ssh-key"
API_KEY_VERSION = "secret:api-key"

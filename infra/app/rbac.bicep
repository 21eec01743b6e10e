// Every role assignment of the deployment: built-in data roles only, each on the narrowest scope
// that works. The app's managed identity gets the first set; an optional developer (or CI)
// identity gets the same data roles, so the app can run locally against the real resources, plus
// what an operator needs: writing the app's own Palette API key into the config vault and reading
// events from the ticketing subscription.
// Assignment names are guid(scope, principal, role): re-deploying changes nothing.

param identityPrincipalId string

@description('Optional object id of a developer (or CI) identity.')
param developerPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
param developerPrincipalType string = 'User'

param storageAccountName string
param keyVaultName string
param configKeyVaultName string
param serviceBusNamespaceName string
param queueName string
param backgroundQueueName string
param topicName string
param subscriptionName string
param appInsightsName string

// Built-in role definition ids (the same in every tenant and cloud).
// Storage Blob Data Owner: the Functions host creates and leases blobs in its own containers
// (azure-webjobs-hosts, azure-webjobs-secrets) and Flex reads the deployment package.
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Storage Table Data Contributor: the `onboardings` state table, the `accounts` inventory and the
// `ratelimits` table that paces Palette calls for every instance.
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Key Vault Secrets Officer: the app writes, tags and reads the managed secrets (client secrets,
// SSH private keys, Palette API key values) in the managed vault. The developer also gets it on
// the config vault, to set the app's own Palette API key.
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
// Key Vault Secrets User: read-only, for the PALETTE_API_KEY Key Vault reference to the config vault.
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
// Azure Service Bus Data Receiver: the queue triggers (receive, complete, abandon, renew lock), on
// each queue and, through the same scope, its dead-letter queue; the developer's on the ticketing
// subscription, to read events.
var serviceBusDataReceiverRoleId = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
// Azure Service Bus Data Sender: HTTP intake, sweeps and scheduled (delayed) retries on the
// onboarding queue; timed rotations and API key renewals on the background queue; CloudEvents on
// the topic.
var serviceBusDataSenderRoleId = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
// Monitoring Metrics Publisher: telemetry ingestion with Entra ID (App Insights local auth is off).
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'
// Not granted: Storage Queue Data Contributor. On Flex Consumption the host uses storage queues
// only for Durable Functions and queue/blob triggers, none of which this app has.

var appPrincipal = [
  {
    id: identityPrincipalId
    type: 'ServicePrincipal'
  }
]
var developerPrincipal = empty(developerPrincipalId) ? [] : [
  {
    id: developerPrincipalId
    type: developerPrincipalType
  }
]
var principals = concat(appPrincipal, developerPrincipal)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource configKeyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: configKeyVaultName
}

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: serviceBusNamespaceName
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = {
  parent: namespace
  name: queueName
}

resource backgroundQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = {
  parent: namespace
  name: backgroundQueueName
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' existing = {
  parent: namespace
  name: topicName
}

resource ticketingSubscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' existing = {
  parent: topic
  name: subscriptionName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// --- the app's identity and the developer: the app's data roles ----------------------------------

resource storageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in principals: {
  name: guid(storage.id, principal.id, storageBlobDataOwnerRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

// Account scope: creating a table on first use is an account-level operation, and the account
// holds nothing but this app's state, inventory and host data.
resource storageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in principals: {
  name: guid(storage.id, principal.id, storageTableDataContributorRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributorRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

resource keyVaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in principals: {
  name: guid(keyVault.id, principal.id, keyVaultSecretsOfficerRoleId)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

resource queueDataReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in principals: {
  name: guid(queue.id, principal.id, serviceBusDataReceiverRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

resource queueDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in principals: {
  name: guid(queue.id, principal.id, serviceBusDataSenderRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

// The background queue: the same two roles, on that queue alone.
resource backgroundQueueDataReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in principals: {
  name: guid(backgroundQueue.id, principal.id, serviceBusDataReceiverRoleId)
  scope: backgroundQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

resource backgroundQueueDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in principals: {
  name: guid(backgroundQueue.id, principal.id, serviceBusDataSenderRoleId)
  scope: backgroundQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

resource topicDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in principals: {
  name: guid(topic.id, principal.id, serviceBusDataSenderRoleId)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

resource appInsightsMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in principals: {
  name: guid(appInsights.id, principal.id, monitoringMetricsPublisherRoleId)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

// --- the config vault: the app reads, only the developer writes ----------------------------------

resource configSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in appPrincipal: {
  name: guid(configKeyVault.id, principal.id, keyVaultSecretsUserRoleId)
  scope: configKeyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

resource configSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in developerPrincipal: {
  name: guid(configKeyVault.id, principal.id, keyVaultSecretsOfficerRoleId)
  scope: configKeyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

// --- the developer reads events (docs/deploy.md, "Read events") ---------------------------------

resource ticketingDataReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in developerPrincipal: {
  name: guid(ticketingSubscription.id, principal.id, serviceBusDataReceiverRoleId)
  scope: ticketingSubscription
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: principal.id
    principalType: principal.type
  }
}]

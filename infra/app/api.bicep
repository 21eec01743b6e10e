// The Flex Consumption plan and the Function App (Python 3.11), with every app setting the app
// reads. Connections are identity-based through the user-assigned identity: no connection string,
// key or SAS appears in any setting.

param name string
param planName string
param location string
param tags object = {}

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
param appInsightsName string
param keyVaultName string
param serviceBusFullyQualifiedNamespace string
param onboardingQueueName string
param eventsTopicName string
param paletteEndpoint string
param paletteApiKeySecretName string
param graphEndpoint string
param rotationSchedule string
param rotationThresholdDays int

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the app of service `api` (azure.yaml) by this tag.
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    // Key Vault references (PALETTE_API_KEY) resolve with the user-assigned identity.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // Host storage (and the state table), through the managed identity.
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storage.properties.primaryEndpoints.table
        }
        // The Service Bus trigger's connection (connection="ServiceBusConnection"); the app's own
        // senders read the namespace from the same setting.
        {
          name: 'ServiceBusConnection__fullyQualifiedNamespace'
          value: serviceBusFullyQualifiedNamespace
        }
        {
          name: 'ServiceBusConnection__credential'
          value: 'managedidentity'
        }
        {
          name: 'ServiceBusConnection__clientId'
          value: identityClientId
        }
        // DefaultAzureCredential picks the user-assigned identity (Key Vault, Graph, Tables, Service Bus).
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVault.properties.vaultUri
        }
        {
          name: 'PALETTE_ENDPOINT'
          value: paletteEndpoint
        }
        {
          name: 'PALETTE_API_KEY'
          value: '@Microsoft.KeyVault(VaultName=${keyVault.name};SecretName=${paletteApiKeySecretName})'
        }
        {
          name: 'ONBOARDING_QUEUE'
          value: onboardingQueueName
        }
        {
          name: 'EVENTS_TOPIC'
          value: eventsTopicName
        }
        {
          name: 'GRAPH_ENDPOINT'
          value: graphEndpoint
        }
        {
          name: 'ROTATION_SCHEDULE'
          value: rotationSchedule
        }
        {
          name: 'ROTATION_THRESHOLD_DAYS'
          value: string(rotationThresholdDays)
        }
        // The sweeper re-drives stuck onboardings and sends events an outage held back.
        {
          name: 'SWEEP_SCHEDULE'
          value: '0 */2 * * * *'
        }
        // A call without Easy Auth's principal is refused (401), so the app-role check cannot be
        // skipped by an authentication setting that lets anonymous callers through.
        {
          name: 'REQUIRE_CLIENT_PRINCIPAL'
          value: 'true'
        }
        // Telemetry with Entra ID: App Insights has local auth disabled.
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD;ClientId=${identityClientId}'
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Basic (user name and password) publishing is off for both SCM and FTP: deployments go through
// Entra ID (azd) and the identity-based deployment container.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'

// Palette Azure onboarding: everything the Function App needs, identity-only, least privilege.
// Subscription-scoped so `azd up` creates the resource group too. Names come from resourceToken.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; part of every resource name (through resourceToken) and a tag.')
param environmentName string

@minLength(1)
@description('Region of every resource; it must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Palette API base URL (PALETTE_ENDPOINT).')
param paletteEndpoint string = 'https://api.spectrocloud.com'

@minLength(1)
@maxLength(127)
@description('Name of the Key Vault secret that holds the tenant-admin Palette API key; PALETTE_API_KEY is a Key Vault reference to it. The secret itself is set after provisioning (see infra/README.md).')
param paletteApiKeySecretName string = 'palette-api-key'

@description('NCRONTAB (six fields) of the secret rotation sweep (ROTATION_SCHEDULE).')
param rotationSchedule string = '0 0 3 * * *'

@minValue(1)
@maxValue(365)
@description('Rotate a client secret when it expires within this many days (ROTATION_THRESHOLD_DAYS).')
param rotationThresholdDays int = 30

@description('Microsoft Graph endpoint the app calls (GRAPH_ENDPOINT); https://graph.microsoft.us in US Government.')
param graphEndpoint string = 'https://graph.microsoft.com'

@minValue(40)
@maxValue(1000)
@description('Upper bound of Flex Consumption instances.')
param maximumInstanceCount int = 40

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Replication of the storage account (host data and the onboardings state table).')
param storageSkuName string = 'Standard_LRS'

@description('Optional object id of a developer (or CI) identity granted the same data roles as the app.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal principalId names.')
param principalType string = 'User'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.functionApp}api-${resourceToken}'
var onboardingQueueName = 'onboarding'
var eventsTopicName = 'events'
var ticketingSubscriptionName = 'ticketing'
var deploymentContainerName = 'app-package'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourceGroup}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentity}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.logAnalytics}${resourceToken}'
    appInsightsName: '${abbrs.appInsights}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    skuName: storageSkuName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVault}${resourceToken}'
    location: location
    tags: tags
  }
}

module serviceBus 'app/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    name: '${abbrs.serviceBus}${resourceToken}'
    location: location
    tags: tags
    queueName: onboardingQueueName
    topicName: eventsTopicName
    subscriptionName: ticketingSubscriptionName
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    developerPrincipalId: principalId
    developerPrincipalType: principalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    serviceBusNamespaceName: serviceBus.outputs.name
    queueName: serviceBus.outputs.queueName
    topicName: serviceBus.outputs.topicName
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  // The roles exist before the app first starts: its Key Vault reference and host storage need them.
  dependsOn: [
    rbac
  ]
  params: {
    name: functionAppName
    planName: '${abbrs.plan}${resourceToken}'
    location: location
    tags: tags
    maximumInstanceCount: maximumInstanceCount
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    onboardingQueueName: serviceBus.outputs.queueName
    eventsTopicName: serviceBus.outputs.topicName
    paletteEndpoint: paletteEndpoint
    paletteApiKeySecretName: paletteApiKeySecretName
    graphEndpoint: graphEndpoint
    rotationSchedule: rotationSchedule
    rotationThresholdDays: rotationThresholdDays
  }
}

// Outputs azd stores in the environment (.azure/<env>/.env).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output PALETTE_API_KEY_SECRET_NAME string = paletteApiKeySecretName
output SERVICE_BUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output ONBOARDING_QUEUE string = serviceBus.outputs.queueName
output EVENTS_TOPIC string = serviceBus.outputs.topicName
output EVENTS_SUBSCRIPTION string = serviceBus.outputs.subscriptionName
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName

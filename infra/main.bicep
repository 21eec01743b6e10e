// Palette Azure onboarding: everything the Function App needs, identity-only, least privilege,
// private by default. Subscription-scoped so `azd up` creates the resource group too. Names come
// from resourceToken.
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

// --- network isolation -----------------------------------------------------------------------

@description('Private networking (VNET_ENABLED): a VNet with the app\'s outbound integration subnet and private endpoints for storage, both vaults and Service Bus, whose public endpoints are then disabled (Service Bus becomes Premium). false deploys everything on public endpoints, for trying it out.')
param vnetEnabled bool = true

@description('With vnetEnabled, also put the Function App (the HTTP API) behind a private endpoint and disable its public endpoint (API_PRIVATE_ENDPOINT_ENABLED).')
param apiPrivateEndpointEnabled bool = false

param vnetAddressPrefix string = '10.60.0.0/16'
param appSubnetPrefix string = '10.60.0.0/24'
param privateEndpointSubnetPrefix string = '10.60.1.0/24'

// --- the app -------------------------------------------------------------------------------

@description('Palette API base URL (PALETTE_ENDPOINT).')
param paletteEndpoint string = 'https://api.spectrocloud.com'

@minLength(1)
@maxLength(127)
@description('Name of the secret in the config vault that holds the tenant-admin Palette API key; PALETTE_API_KEY is a Key Vault reference to it. The secret itself is set after provisioning (docs/deploy.md).')
param paletteApiKeySecretName string = 'palette-api-key'

@description('Application (client) id of the API\'s Entra ID app registration (API_CLIENT_ID). Empty: App Service authentication stays on with no identity provider, so every API route but health and openapi.json answers 401 until it is set.')
param apiClientId string = ''

@description('Operator-provided Key Vault secrets (azure.secret.source keyVault) must start with this (KEY_VAULT_ALLOWED_SECRET_PREFIX), so a request cannot name a secret the app manages for another account.')
param keyVaultAllowedSecretPrefix string = 'operator-'

@description('NCRONTAB (six fields) of the secret rotation sweep (ROTATION_SCHEDULE).')
param rotationSchedule string = '0 0 3 * * *'

@minValue(1)
@maxValue(365)
@description('Rotate a client secret when it expires within this many days (ROTATION_THRESHOLD_DAYS).')
param rotationThresholdDays int = 30

@minValue(0)
@maxValue(10080)
@description('A secret younger than this is never rotated again (ROTATION_MIN_AGE_MINUTES).')
param rotationMinAgeMinutes int = 60

@description('NCRONTAB (six fields) of the sweep that re-drives onboardings left stuck (SWEEP_SCHEDULE).')
param sweepSchedule string = '0 */2 * * * *'

@description('NCRONTAB (six fields) of the drift pass, hourly: each run looks at the slice of the managed accounts that fell due (DRIFT_SCHEDULE).')
param driftSchedule string = '0 20 * * * *'

@description('Deploy the Event Grid subscription that delivers SecretNearExpiry to rotation_near_expiry (ROTATION_EVENTS_ENABLED). Event Grid needs the function to exist, so the postdeploy hook sets this after the first deploy.')
param rotationEventsEnabled bool = false

@description('Microsoft Graph endpoint the app calls (GRAPH_ENDPOINT); https://graph.microsoft.us in US Government.')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('Azure Resource Manager endpoint where onboarded principals\' role assignments are read (RESOURCE_MANAGER_ENDPOINT); https://management.usgovcloudapi.net in US Government.')
param resourceManagerEndpoint string = 'https://management.azure.com'

@minValue(0)
@maxValue(600)
@description('Seconds to keep retrying Palette\'s credential validation while a new secret propagates (VALIDATION_BUDGET_SECONDS).')
param validationBudgetSeconds int = 60

@description('Delays of the delayed retries when a dependency stays down (RETRY_DELAYS_SECONDS).')
param retryDelaysSeconds string = '30,60,120,300,600,900'

@description('SaaS Palette needs a Private Cloud Gateway for US Government accounts; false for self-hosted Palette (PALETTE_REQUIRE_PCG_FOR_US_GOVERNMENT).')
param paletteRequirePcgForUsGovernment bool = true

// --- capacity (infra/README.md, "Capacity") --------------------------------------------------

@minValue(1)
@maxValue(1000)
@description('Upper bound of on-demand instances per function group (MAXIMUM_INSTANCE_COUNT). Most regions accept 40 at the lowest.')
param maximumInstanceCount int = 40

@minValue(1)
@maxValue(1000)
@description('Concurrent HTTP requests per instance before the HTTP group scales out.')
param httpPerInstanceConcurrency int = 16

// --- the rest --------------------------------------------------------------------------------

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Replication of the storage account (host data, the onboardings state table, the accounts inventory).')
param storageSkuName string = 'Standard_LRS'

@description('E-mail address the alert rules notify (ALERT_EMAIL); empty for none.')
param alertEmail string = ''

@description('Optional object id of a developer (or CI) identity granted the app\'s data roles and the operator\'s (AZURE_PRINCIPAL_ID).')
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
// Timed rotations and API key renewals: their own queue, so onboardings never wait behind them.
var backgroundQueueName = 'background'
var eventsTopicName = 'events'
var ticketingSubscriptionName = 'ticketing'
var deploymentContainerName = 'app-package'
var apiPrivate = vnetEnabled && apiPrivateEndpointEnabled

// Public switches of the data services: off whenever the network is private.
var dataPublicNetworkAccess = vnetEnabled ? 'Disabled' : 'Enabled'
var dataNetworkDefaultAction = vnetEnabled ? 'Deny' : 'Allow'

// Private DNS zones, in the form of the cloud the deployment runs in.
var sitesZoneByCloud = {
  AzureCloud: 'privatelink.azurewebsites.net'
  AzureUSGovernment: 'privatelink.azurewebsites.us'
  AzureChinaCloud: 'privatelink.chinacloudsites.cn'
}
var blobZoneName = 'privatelink.blob.${environment().suffixes.storage}'
var tableZoneName = 'privatelink.table.${environment().suffixes.storage}'
var vaultZoneName = 'privatelink${replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')}'
var serviceBusZoneName = 'privatelink.${substring(serviceBus.outputs.fullyQualifiedNamespace, indexOf(serviceBus.outputs.fullyQualifiedNamespace, '.') + 1)}'
var sitesZoneName = sitesZoneByCloud[environment().name]
var dnsZoneNames = concat([
  blobZoneName
  tableZoneName
  vaultZoneName
  serviceBusZoneName
], apiPrivate ? [
  sitesZoneName
] : [])

// Event Grid delivers SecretNearExpiry for the product's own secrets (all named palette-...) and for
// operator-provided ones (the allowed prefix).
var rotationEventSecretPrefixes = concat([
  'palette-'
], empty(keyVaultAllowedSecretPrefix) ? [] : [
  keyVaultAllowedSecretPrefix
])

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
    actionGroupName: '${abbrs.actionGroup}${resourceToken}'
    alertEmail: alertEmail
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
    publicAccess: dataPublicNetworkAccess
    networkDefaultAction: dataNetworkDefaultAction
  }
}

// The managed vault (KEY_VAULT_URL): client secrets, SSH private keys, Palette API key values.
module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVault}${resourceToken}'
    location: location
    tags: tags
    publicAccess: dataPublicNetworkAccess
    networkDefaultAction: dataNetworkDefaultAction
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

// The config vault: only the app's own Palette API key (PALETTE_API_KEY reference).
module configKeyVault 'app/keyvault.bicep' = {
  name: 'config-keyvault'
  scope: rg
  params: {
    name: '${abbrs.configKeyVault}${resourceToken}'
    location: location
    tags: tags
    publicAccess: dataPublicNetworkAccess
    networkDefaultAction: dataNetworkDefaultAction
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
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
    backgroundQueueName: backgroundQueueName
    topicName: eventsTopicName
    subscriptionName: ticketingSubscriptionName
    serviceBusSku: vnetEnabled ? 'Premium' : 'Standard'
    publicAccess: dataPublicNetworkAccess
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module events 'app/events.bicep' = {
  name: 'events'
  scope: rg
  params: {
    name: '${abbrs.eventGridSystemTopic}${resourceToken}'
    location: location
    tags: tags
    keyVaultName: keyVault.outputs.name
  }
}

// --- private networking (vnetEnabled) --------------------------------------------------------

module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.virtualNetwork}${resourceToken}'
    location: location
    tags: tags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    nsgNamePrefix: '${abbrs.networkSecurityGroup}${resourceToken}-'
    dnsZoneNames: dnsZoneNames
  }
}

module blobEndpoint 'app/private-endpoint.bicep' = if (vnetEnabled) {
  name: 'pe-blob'
  scope: rg
  params: {
    name: '${abbrs.privateEndpoint}${resourceToken}-blob'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: storage.outputs.id
    groupId: 'blob'
    dnsZoneName: blobZoneName
  }
}

module tableEndpoint 'app/private-endpoint.bicep' = if (vnetEnabled) {
  name: 'pe-table'
  scope: rg
  params: {
    name: '${abbrs.privateEndpoint}${resourceToken}-table'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: storage.outputs.id
    groupId: 'table'
    dnsZoneName: tableZoneName
  }
}

module keyVaultEndpoint 'app/private-endpoint.bicep' = if (vnetEnabled) {
  name: 'pe-keyvault'
  scope: rg
  params: {
    name: '${abbrs.privateEndpoint}${resourceToken}-kv'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: keyVault.outputs.id
    groupId: 'vault'
    dnsZoneName: vaultZoneName
  }
}

module configKeyVaultEndpoint 'app/private-endpoint.bicep' = if (vnetEnabled) {
  name: 'pe-config-keyvault'
  scope: rg
  params: {
    name: '${abbrs.privateEndpoint}${resourceToken}-kvc'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: configKeyVault.outputs.id
    groupId: 'vault'
    dnsZoneName: vaultZoneName
  }
}

module serviceBusEndpoint 'app/private-endpoint.bicep' = if (vnetEnabled) {
  name: 'pe-servicebus'
  scope: rg
  params: {
    name: '${abbrs.privateEndpoint}${resourceToken}-sb'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: serviceBus.outputs.id
    groupId: 'namespace'
    dnsZoneName: serviceBusZoneName
  }
}

module apiEndpoint 'app/private-endpoint.bicep' = if (apiPrivate) {
  name: 'pe-api'
  scope: rg
  params: {
    name: '${abbrs.privateEndpoint}${resourceToken}-api'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: api.outputs.id
    groupId: 'sites'
    dnsZoneName: sitesZoneName
  }
}

// --- roles, then the app ---------------------------------------------------------------------

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    developerPrincipalId: principalId
    developerPrincipalType: principalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    configKeyVaultName: configKeyVault.outputs.name
    serviceBusNamespaceName: serviceBus.outputs.name
    queueName: serviceBus.outputs.queueName
    backgroundQueueName: serviceBus.outputs.backgroundQueueName
    topicName: serviceBus.outputs.topicName
    subscriptionName: serviceBus.outputs.subscriptionName
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

// Reading onboarded principals' role assignments (azure.permissions), on this subscription unless
// others (of this tenant) are listed.
@description('Subscriptions whose role assignments the app may read to check azure.permissions; empty: this one.')
param permissionsReadSubscriptionIds array = []
var permissionsSubscriptions = empty(permissionsReadSubscriptionIds) ? [subscription().subscriptionId] : permissionsReadSubscriptionIds

module permissionsReader 'app/permissions-reader.bicep' = [for subscriptionId in permissionsSubscriptions: {
  name: 'permissions-reader-${subscriptionId}'
  scope: subscription(subscriptionId)
  params: {
    identityPrincipalId: identity.outputs.principalId
  }
}]

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  // The roles and the private endpoints exist before the app first starts: its Key Vault
  // reference and host storage need both.
  dependsOn: [
    rbac
    blobEndpoint
    tableEndpoint
    keyVaultEndpoint
    configKeyVaultEndpoint
    serviceBusEndpoint
  ]
  params: {
    name: functionAppName
    planName: '${abbrs.plan}${resourceToken}'
    location: location
    tags: tags
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    configKeyVaultName: configKeyVault.outputs.name
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    onboardingQueueName: serviceBus.outputs.queueName
    backgroundQueueName: serviceBus.outputs.backgroundQueueName
    eventsTopicName: serviceBus.outputs.topicName
    paletteEndpoint: paletteEndpoint
    paletteApiKeySecretName: paletteApiKeySecretName
    graphEndpoint: graphEndpoint
    resourceManagerEndpoint: resourceManagerEndpoint
    rotationSchedule: rotationSchedule
    rotationThresholdDays: rotationThresholdDays
    rotationMinAgeMinutes: rotationMinAgeMinutes
    sweepSchedule: sweepSchedule
    driftSchedule: driftSchedule
    keyVaultAllowedSecretPrefix: keyVaultAllowedSecretPrefix
    validationBudgetSeconds: validationBudgetSeconds
    retryDelaysSeconds: retryDelaysSeconds
    paletteRequirePcgForUsGovernment: paletteRequirePcgForUsGovernment
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    apiPublicAccess: apiPrivate ? 'Disabled' : 'Enabled'
    apiClientId: apiClientId
  }
}

// Event Grid cannot reach an app whose public endpoint is off, so no subscription then: the daily
// rotation sweep finds the same secrets.
module rotationEvents 'app/rotation-events.bicep' = if (rotationEventsEnabled && !apiPrivate) {
  name: 'rotation-events'
  scope: rg
  params: {
    systemTopicName: events.outputs.name
    functionAppName: api.outputs.name
    secretNamePrefixes: rotationEventSecretPrefixes
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
output CONFIG_KEY_VAULT_NAME string = configKeyVault.outputs.name
output PALETTE_API_KEY_SECRET_NAME string = paletteApiKeySecretName
output SERVICE_BUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output SERVICE_BUS_NAMESPACE_NAME string = serviceBus.outputs.name
output ONBOARDING_QUEUE string = serviceBus.outputs.queueName
output BACKGROUND_QUEUE string = serviceBus.outputs.backgroundQueueName
output EVENTS_TOPIC string = serviceBus.outputs.topicName
output EVENTS_SUBSCRIPTION string = serviceBus.outputs.subscriptionName
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output LOG_ANALYTICS_NAME string = monitoring.outputs.logAnalyticsName
output EVENTGRID_SYSTEM_TOPIC_NAME string = events.outputs.name
output ROTATION_EVENT_SECRET_PREFIXES array = rotationEventSecretPrefixes
output VNET_ENABLED bool = vnetEnabled
output API_PRIVATE bool = apiPrivate

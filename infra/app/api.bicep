// The Flex Consumption plan and the Function App (Python 3.11), with every app setting the app
// reads, App Service authentication (Entra ID) in front of the API routes, and outbound VNet
// integration when main.bicep gives a subnet. Connections are identity-based through the
// user-assigned identity: no connection string, key or SAS appears in any setting.

param name string
param planName string
param location string
param tags object = {}

// Capacity: see "Capacity" in infra/README.md for how these bound the calls to Palette.
@description('Upper bound of on-demand instances per function group (the platform\'s floor is 40 in most regions).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Concurrent HTTP invocations per instance before the HTTP group scales out.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

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

@description('The managed vault (KEY_VAULT_URL): client secrets, SSH private keys, Palette API key values.')
param keyVaultName string

@description('The config vault: the app\'s own Palette API key, read only through the PALETTE_API_KEY reference.')
param configKeyVaultName string

param serviceBusFullyQualifiedNamespace string
param onboardingQueueName string
param backgroundQueueName string
param eventsTopicName string
param paletteEndpoint string
param paletteApiKeySecretName string
param graphEndpoint string
param resourceManagerEndpoint string
param rotationSchedule string
param rotationThresholdDays int
param rotationMinAgeMinutes int
param sweepSchedule string
param driftSchedule string
param keyVaultAllowedSecretPrefix string
param validationBudgetSeconds int
param retryDelaysSeconds string
param paletteRequirePcgForUsGovernment bool

@description('Resource id of the subnet for outbound VNet integration; empty for none.')
param virtualNetworkSubnetId string = ''

@description('Public endpoint of the app (the HTTP API): Enabled, or Disabled when the app sits behind its own private endpoint.')
@allowed([
  'Enabled'
  'Disabled'
])
param apiPublicAccess string = 'Enabled'

@description('Application (client) id of the API\'s Entra ID app registration; empty keeps every authenticated route closed (401).')
param apiClientId string = ''

// GRAPH_ENDPOINT without a trailing slash, so the scope is <endpoint>/.default exactly.
var graphBase = endsWith(graphEndpoint, '/') ? take(graphEndpoint, length(graphEndpoint) - 1) : graphEndpoint

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource configKeyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: configKeyVaultName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption is a regional option that is billed as always-ready instances; a scale-to-zero workload that resumes from the queue leaves it off.
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
  // checkov:skip=CKV_AZURE_222: the HTTP API is meant to be reachable by internal tools; Entra ID sign-in (authsettingsV2) and function keys guard it, and apiPrivateEndpointEnabled puts it behind a private endpoint with this switch off.
  // checkov:skip=CKV_AZURE_17: callers authenticate with Entra ID tokens and function keys; mutual TLS is not part of the API's contract.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; always-ready instances are a paid option, not needed for failover (the queue holds the work).
  // checkov:skip=CKV_AZURE_213: the platform health check keeps instances of a scale-to-zero plan busy; GET /api/health is anonymous for external probes.
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
    publicNetworkAccess: apiPublicAccess
    // Flex Consumption routes all outbound traffic through this subnet, Key Vault references too.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    // Key Vault references (PALETTE_API_KEY) resolve with the user-assigned identity.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // Host storage (and the state and inventory tables), through the managed identity.
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
        // The Service Bus triggers' connection (connection="ServiceBusConnection": both queues and
        // their dead-letter queues); the app's own senders read the namespace from the same setting.
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
        // The Python worker runs sync functions on one thread pool (default min(32, CPUs + 4): 6 on a
        // 2-core instance, fewer than the queue triggers' calls host.json allows). Sized in
        // infra/README.md ("Capacity"): the four queue triggers (both queues, both dead-letter
        // queues) at maxConcurrentCalls, the timers, HTTP.
        {
          name: 'PYTHON_THREADPOOL_THREAD_COUNT'
          value: '60'
        }
        // DefaultAzureCredential picks the user-assigned identity (Key Vault, Graph, Tables, Service Bus).
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        // The cloud's sign-in authority, from the deployment's own cloud (sovereign clouds included).
        {
          name: 'AZURE_AUTHORITY_HOST'
          value: environment().authentication.loginEndpoint
        }
        // The managed vault; the app's own Palette API key is not in it.
        {
          name: 'KEY_VAULT_URL'
          value: keyVault.properties.vaultUri
        }
        {
          name: 'KEY_VAULT_ALLOWED_SECRET_PREFIX'
          value: keyVaultAllowedSecretPrefix
        }
        {
          name: 'PALETTE_ENDPOINT'
          value: paletteEndpoint
        }
        // Resolved by the platform from the config vault, where the identity is Secrets User only.
        {
          name: 'PALETTE_API_KEY'
          value: '@Microsoft.KeyVault(VaultName=${configKeyVault.name};SecretName=${paletteApiKeySecretName})'
        }
        // The pace of Palette calls per resource prefix for the whole app, every instance taking
        // its slots from one schedule in the storage account's ratelimits table (infra/README.md,
        // "Capacity"): under Palette's 10/s and burst 5 whatever the number of instances.
        {
          name: 'PALETTE_RATE_PER_SECOND'
          value: '9'
        }
        {
          name: 'PALETTE_RATE_BURST'
          value: '4'
        }
        // Background work (drift, timed rotation, API key renewal) takes at most this share of a
        // prefix's pace while onboardings are about, and never their burst; Graph writes are paced
        // app-wide under Graph's 3,000 per 2.5 minutes per app and tenant (the defaults, written out).
        {
          name: 'PALETTE_BACKGROUND_SHARE'
          value: '0.5'
        }
        {
          name: 'GRAPH_WRITES_PER_SECOND'
          value: '16'
        }
        {
          name: 'PALETTE_REQUIRE_PCG_FOR_US_GOVERNMENT'
          value: paletteRequirePcgForUsGovernment ? 'true' : 'false'
        }
        {
          name: 'ONBOARDING_QUEUE'
          value: onboardingQueueName
        }
        // Timed rotations and API key renewals: a queue of their own, with its own triggers.
        {
          name: 'BACKGROUND_QUEUE'
          value: backgroundQueueName
        }
        {
          name: 'EVENTS_TOPIC'
          value: eventsTopicName
        }
        {
          name: 'GRAPH_ENDPOINT'
          value: graphBase
        }
        {
          name: 'GRAPH_SCOPE'
          value: '${graphBase}/.default'
        }
        {
          name: 'VALIDATION_BUDGET_SECONDS'
          value: string(validationBudgetSeconds)
        }
        {
          name: 'RETRY_DELAYS_SECONDS'
          value: retryDelaysSeconds
        }
        // The lease a delivery holds on a request and its names, renewed every third of it; at most
        // the queue's lock duration (1 minute), so a redelivery after a crash finds it lapsed.
        {
          name: 'LEASE_SECONDS'
          value: '30'
        }
        {
          name: 'SWEEP_SCHEDULE'
          value: sweepSchedule
        }
        {
          name: 'DRIFT_SCHEDULE'
          value: driftSchedule
        }
        // Every managed account is looked at once in this many days, a slice per drift run, at
        // most this many accounts a run (the defaults, written out).
        {
          name: 'DRIFT_PERIOD_DAYS'
          value: '7'
        }
        {
          name: 'DRIFT_SLICE_MAX'
          value: '600'
        }
        // This cloud's Resource Manager, where onboarded principals' role assignments are read
        // (azure.permissions); the token's scope defaults to the endpoint's.
        {
          name: 'RESOURCE_MANAGER_ENDPOINT'
          value: resourceManagerEndpoint
        }
        // A replaced Palette API key is deactivated this many days after its successor was stored,
        // and deleted this many days after that; a Graph password the product made that is neither
        // current nor previous is removed after this many hours (the defaults, written out so an
        // operator sees where to change them).
        {
          name: 'API_KEY_OVERLAP_DAYS'
          value: '7'
        }
        {
          name: 'API_KEY_DELETE_AFTER_DAYS'
          value: '14'
        }
        {
          name: 'ORPHAN_GRACE_HOURS'
          value: '24'
        }
        {
          name: 'ROTATION_SCHEDULE'
          value: rotationSchedule
        }
        {
          name: 'ROTATION_THRESHOLD_DAYS'
          value: string(rotationThresholdDays)
        }
        {
          name: 'ROTATION_MIN_AGE_MINUTES'
          value: string(rotationMinAgeMinutes)
        }
        // The code answers 401 to an API call that arrives without App Service authentication's
        // principal header (authsettingsV2 below strips any header a client sends).
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
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// App Service authentication (Easy Auth): every path needs a valid Entra ID token for the API's
// app registration except the anonymous ones below; a request without one gets 401 before it
// reaches the code. It also strips any X-MS-CLIENT-PRINCIPAL a client sends, so the header the
// code sees is the platform's. With no apiClientId there is no identity provider: the
// authenticated routes stay closed (401) until one is configured, and the open ones still work.
var anonymousPaths = [
  '/api/health'
  '/api/openapi.json'
  // Event Grid delivers SecretNearExpiry here, authenticated by the Event Grid extension's key.
  '/runtime/webhooks/eventgrid'
]
var entraIdProvider = {
  azureActiveDirectory: {
    enabled: true
    registration: {
      clientId: apiClientId
      openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
    }
    validation: {
      allowedAudiences: [
        apiClientId
        'api://${apiClientId}'
      ]
    }
  }
}

resource authentication 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: this check reads the legacy authsettings schema (properties.enabled); this is authsettingsV2, whose platform.enabled is checked by CKV_AZURE_56.
  // checkov:skip=CKV_AZURE_63: a check of the site's web config (HTTP logging), which checkov also applies to every other sites/config resource; this one is authsettingsV2.
  // checkov:skip=CKV_AZURE_65: a check of the site's web config (detailed errors), which checkov also applies to every other sites/config resource; this one is authsettingsV2.
  // checkov:skip=CKV_AZURE_66: a check of the site's web config (failed request tracing), which checkov also applies to every other sites/config resource; this one is authsettingsV2.
  // checkov:skip=CKV_AZURE_80: a check of the site's web config (.NET version), which checkov also applies to every other sites/config resource; this one is authsettingsV2.
  // checkov:skip=CKV_AZURE_88: a check of the site's web config (Azure Files), which checkov also applies to every other sites/config resource; this one is authsettingsV2.
  // checkov:skip=CKV_AZURE_222: a check of the site's web config (public network access, set on the site above), which checkov also applies to every other sites/config resource; this one is authsettingsV2.
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: anonymousPaths
    }
    identityProviders: empty(apiClientId) ? {} : entraIdProvider
    login: {
      tokenStore: {
        enabled: false
      }
    }
    httpSettings: {
      requireHttps: true
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

output id string = functionApp.id
output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'

// Storage for the Functions host (blob leases, keys), the Flex deployment package container, the
// app's `onboardings` state table and its `accounts` inventory. Entra ID only: shared keys (and so
// connection strings and SAS) are disabled; no anonymous blob access; TLS 1.2. Private by default:
// main.bicep opens the public endpoint only when vnetEnabled is false.

param name string
param location string
param tags object = {}
param deploymentContainerName string
param stateTableName string = 'onboardings'
param inventoryTableName string = 'accounts'
@description('The app-wide pace of Palette calls, one row per resource prefix (shared/state/pace.py).')
param paceTableName string = 'ratelimits'

@description('Public endpoint: Disabled (reached through private endpoints for blob and table) or Enabled.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicAccess string = 'Disabled'

@description('Firewall default for the public endpoint: Deny, or Allow when publicAccess is Enabled.')
@allowed([
  'Allow'
  'Deny'
])
param networkDefaultAction string = 'Deny'

@description('Replication. LRS is the cheapest and exists in every region; ZRS or GZRS keep the state table through a zone outage where the region has zones.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206: replication is the skuName parameter (STORAGE_SKU_NAME); LRS by default because every region has it, ZRS or GZRS where the region has zones.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: publicAccess
    networkAcls: {
      defaultAction: networkDefaultAction
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        table: {
          enabled: true
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The app also creates it on first use; declaring it keeps the state table visible in the template.
resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: stateTableName
}

// The inventory of managed accounts (rotation, drift); the app creates it on first use too.
resource inventoryTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: inventoryTableName
}

// The schedule every instance takes its Palette slots from; the app creates it on first use too.
resource paceTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: paceTableName
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table

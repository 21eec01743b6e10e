// A Key Vault: Azure RBAC only (no access policies), soft delete and purge protection on (a deleted
// secret can be recovered, and nobody can purge it early), every data-plane call audited to Log
// Analytics. main.bicep declares two: the managed vault (client secrets, SSH private keys,
// Palette API key values: KEY_VAULT_URL) and the config vault (the app's own Palette API key,
// behind the PALETTE_API_KEY reference), so the code that writes managed secrets holds no right
// on the app's own key. Private by default: main.bicep opens the public endpoint only when
// vnetEnabled is false.

param name string
param location string
param tags object = {}

@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Public endpoint: Disabled (reached through a private endpoint) or Enabled.')
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

@description('Log Analytics workspace that receives the vault\'s audit events.')
param logAnalyticsWorkspaceId string

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicAccess
    networkAcls: {
      defaultAction: networkDefaultAction
      bypass: 'AzureServices'
    }
  }
}

// Who read or wrote which secret, and when (AzureDiagnostics, category AuditEvent).
resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit'
  scope: keyVault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output id string = keyVault.id
output name string = keyVault.name
output uri string = keyVault.properties.vaultUri

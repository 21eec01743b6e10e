// The Event Grid system topic of the managed vault: Key Vault publishes its secret events
// (SecretNearExpiry among them) to it. The subscription that delivers them to the rotation
// function is rotation-events.bicep, deployed once that function exists (see infra/README.md,
// "Rotation events").

param name string
param location string
param tags object = {}

@description('Name of the managed vault (KEY_VAULT_URL) whose events the topic carries.')
param keyVaultName string

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    source: keyVault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

output name string = systemTopic.name

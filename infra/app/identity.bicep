// The Function App's user-assigned managed identity: the one principal behind every connection
// (host storage, deployment storage, Service Bus, Key Vault, Graph, App Insights ingestion).

param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId

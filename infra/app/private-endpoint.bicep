// One private endpoint: a network interface in the private endpoint subnet for one sub-resource
// (groupId) of a resource, with its A record registered in the matching private DNS zone, so the
// resource's usual host name resolves to the private address inside the network.

param name string
param location string
param tags object = {}

@description('Resource id of the private endpoint subnet.')
param subnetId string

@description('Resource id of the resource reached through the endpoint.')
param targetResourceId string

@description('Sub-resource: blob, table, vault, namespace or sites.')
@allowed([
  'blob'
  'table'
  'vault'
  'namespace'
  'sites'
])
param groupId string

@description('Name of the private DNS zone (in this resource group) the record goes in.')
param dnsZoneName string

resource dnsZone 'Microsoft.Network/privateDnsZones@2024-06-01' existing = {
  name: dnsZoneName
}

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: targetResourceId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource dnsZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: replace(dnsZoneName, '.', '-')
        properties: {
          privateDnsZoneId: dnsZone.id
        }
      }
    ]
  }
}

output id string = endpoint.id

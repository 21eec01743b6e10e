// The virtual network of the private deployment (vnetEnabled): one subnet for the Function App's
// outbound integration (delegated to Microsoft.App/environments, as Flex Consumption requires),
// one for the private endpoints, a network security group on each, and the private DNS zones the
// private endpoints register in, each linked to the network.

param name string
param location string
param tags object = {}

@description('Address space of the network.')
param addressPrefix string = '10.60.0.0/16'

@description('Subnet of the Function App\'s outbound VNet integration. Flex Consumption takes one address per instance: a /24 leaves room for maximumInstanceCount up to 250.')
param appSubnetPrefix string = '10.60.0.0/24'

@description('Subnet of the private endpoints (storage blob and table, both vaults, Service Bus, optionally the Function App).')
param privateEndpointSubnetPrefix string = '10.60.1.0/24'

param nsgNamePrefix string

@description('Names of the private DNS zones to create and link (blob, table, vault, Service Bus, optionally sites).')
param dnsZoneNames array

var appSubnetName = 'snet-app'
var privateEndpointSubnetName = 'snet-private-endpoints'

// No custom rules: the defaults allow traffic inside the network and to the internet outbound,
// and deny inbound from the internet. Private endpoints honour them (network policies on).
resource appNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${nsgNamePrefix}app'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource privateEndpointNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${nsgNamePrefix}private-endpoints'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: appNsg.id
          }
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: privateEndpointNsg.id
          }
          privateEndpointNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for zoneName in dnsZoneNames: {
  name: zoneName
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (zoneName, i) in dnsZoneNames: {
  parent: zones[i]
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

output id string = vnet.id
output name string = vnet.name
output appSubnetId string = '${vnet.id}/subnets/${appSubnetName}'
output privateEndpointSubnetId string = '${vnet.id}/subnets/${privateEndpointSubnetName}'

// Service Bus: the `onboarding` queue the trigger listens on (and the HTTP intake and delayed
// retries send to; its dead-letter queue has a trigger of its own), the `background` queue for
// timed rotations and API key renewals (its own trigger and dead-letter trigger, so an onboarding
// never waits behind thousands of them) and the `events` topic with a subscription for ticketing
// systems. Premium when private (only Premium takes private endpoints),
// Standard otherwise (Basic has no topics). Entra ID only (SAS keys disabled), TLS 1.2. Metrics go
// to Log Analytics, where the dead-letter query reads them.

param name string
param location string
param tags object = {}
param queueName string
param backgroundQueueName string
param topicName string
param subscriptionName string

@description('Premium (private endpoints, isolated capacity) or Standard (public endpoint only).')
@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Premium'

@description('Public endpoint: Disabled (reached through a private endpoint; Premium only) or Enabled.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicAccess string = 'Disabled'

@description('Log Analytics workspace that receives the namespace\'s metrics (AzureMetrics).')
param logAnalyticsWorkspaceId string

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: serviceBusSku
    tier: serviceBusSku
    // Messaging units: Premium only.
    capacity: serviceBusSku == 'Premium' ? 1 : null
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: publicAccess
  }
}

// The namespace firewall (Premium): nothing but the private endpoint, even while someone opens the
// public endpoint for a moment (docs/deploy.md): only IP rules added then get in, and the next
// deployment removes them.
resource firewall 'Microsoft.ServiceBus/namespaces/networkRuleSets@2024-01-01' = if (serviceBusSku == 'Premium') {
  parent: namespace
  name: 'default'
  properties: {
    publicNetworkAccess: publicAccess
    defaultAction: 'Deny'
    trustedServiceAccessEnabled: false
    ipRules: []
    virtualNetworkRules: []
  }
}

// Both queues: duplicate detection on message_id (= requestId) over 10 minutes; a message that
// keeps failing goes to the dead-letter queue after 10 deliveries. The 1-minute lock is renewed by
// the host (maxAutoLockRenewalDuration in host.json). One set of properties, so the two cannot
// drift apart.
var queueProperties = {
  requiresDuplicateDetection: true
  duplicateDetectionHistoryTimeWindow: 'PT10M'
  maxDeliveryCount: 10
  lockDuration: 'PT1M'
  deadLetteringOnMessageExpiration: true
  defaultMessageTimeToLive: 'P14D'
  requiresSession: false
  enablePartitioning: false
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: namespace
  name: queueName
  properties: queueProperties
}

resource backgroundQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: namespace
  name: backgroundQueueName
  properties: queueProperties
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = {
  parent: namespace
  name: topicName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    defaultMessageTimeToLive: 'P14D'
    enablePartitioning: false
  }
}

resource ticketing 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = {
  parent: topic
  name: subscriptionName
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
    requiresSession: false
  }
}

// Active, dead-lettered and scheduled message counts per entity, for the dead-letter query.
resource metrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'metrics'
  scope: namespace
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = namespace.id
output name string = namespace.name
// serviceBusEndpoint is https://<name>.servicebus.<cloud suffix>:443/; keep only the host name.
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '/')[2], ':')[0]
output queueName string = queue.name
output backgroundQueueName string = backgroundQueue.name
output topicName string = topic.name
output subscriptionName string = ticketing.name

// Service Bus: the `onboarding` queue the trigger listens on (and the HTTP intake and delayed
// retries send to) and the `events` topic with a subscription for ticketing systems. Standard,
// because Basic has no topics. Entra ID only (SAS keys disabled), TLS 1.2.

param name string
param location string
param tags object = {}
param queueName string
param topicName string
param subscriptionName string

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

// Duplicate detection on message_id (= requestId) over 10 minutes; a message that keeps failing
// goes to the dead-letter queue after 10 deliveries. The 1-minute lock is renewed by the host
// (maxAutoLockRenewalDuration in host.json).
resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: namespace
  name: queueName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
    requiresSession: false
    enablePartitioning: false
  }
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

output name string = namespace.name
// serviceBusEndpoint is https://<name>.servicebus.<cloud suffix>:443/; keep only the host name.
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '/')[2], ':')[0]
output queueName string = queue.name
output topicName string = topic.name
output subscriptionName string = ticketing.name

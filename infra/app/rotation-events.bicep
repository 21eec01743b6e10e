// The Event Grid subscription that delivers Key Vault's SecretNearExpiry (30 days before a
// secret's expiry) to the `rotation_near_expiry` function. Event Grid checks that the function
// exists when the subscription is created, so this is deployed only after `azd deploy` has
// published the code: by main.bicep when rotationEventsEnabled is true, and by the postdeploy
// hook (scripts/rotation-events.sh), which deploys this file on its own the first time and then
// sets ROTATION_EVENTS_ENABLED so every later `azd provision` keeps it.

param systemTopicName string
param functionAppName string

@description('The Event Grid trigger function that handles SecretNearExpiry.')
param functionName string = 'rotation_near_expiry'

@description('Secret names the product owns or reads start with one of these (Event Grid compares the subject, the secret name, case-insensitively).')
@minLength(1)
@maxLength(25)
param secretNamePrefixes array

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource nearExpiry 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: 'rotation-near-expiry'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNearExpiry'
      ]
      advancedFilters: [
        {
          operatorType: 'StringBeginsWith'
          key: 'subject'
          values: secretNamePrefixes
        }
      ]
    }
    // A missed event is not lost: the daily rotation sweep finds the same secrets.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output name string = nearExpiry.name

// Log Analytics and workspace-based Application Insights, local (instrumentation key) auth off: the
// app sends telemetry with its managed identity (Monitoring Metrics Publisher, in rbac.bicep).
// On top: the saved queries an operator asks for first, a workbook with the same queries, and
// two alert rules (dead-lettered messages, failed rotations). The queries read the app's log
// lines (AppTraces) and the Service Bus metrics (AzureMetrics); infra/README.md, "Observability",
// lists the log lines they parse.

param logAnalyticsName string
param appInsightsName string
param location string
param tags object = {}

@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('E-mail address the alerts notify; empty for none (alerts still show in the portal).')
param alertEmail string = ''

param actionGroupName string

// One query per question; each is a saved query and a workbook tile.
var queries = [
  {
    name: 'failed-onboardings-by-reason'
    title: 'Failed onboardings by reason (7 days)'
    query: '''
union
  (AppTraces
   | where Message startswith "request " and Message has ": failed at "
   | parse Message with "request " RequestId ": failed at " Step " (" Reason "): " Detail),
  (AppTraces
   | where Message startswith "request " and Message has " rejected: "
   | parse Message with "request " RequestId " rejected: " Detail
   | extend Step = "check", Reason = "invalid request")
| where TimeGenerated > ago(7d)
| summarize Requests = dcount(RequestId), LastSeen = max(TimeGenerated), Example = take_any(Detail) by Reason, Step
| order by Requests desc
'''
  }
  {
    name: 'rotations-due-in-30-days'
    title: 'Client secrets that expire within 30 days'
    query: '''
AppTraces
| where TimeGenerated > ago(2d)
| where Message startswith "rotation check: account "
| parse Message with "rotation check: account " Account " expires " ExpiresText
| summarize arg_max(TimeGenerated, ExpiresText) by Account
| extend ExpiresOn = todatetime(ExpiresText)
| where ExpiresOn < now() + 30d
| project Account, ExpiresOn, DaysLeft = datetime_diff("day", ExpiresOn, now()), CheckedAt = TimeGenerated
| order by ExpiresOn asc
'''
  }
  {
    name: 'drift'
    title: 'Accounts in drift (last event per account)'
    query: '''
AppTraces
| where TimeGenerated > ago(30d)
| where Message startswith "Published event palette.onboarding.drift."
| parse Message with "Published event palette.onboarding.drift." State " id " EventId " subject " Account
| summarize arg_max(TimeGenerated, State) by Account
| where State == "detected"
| project Account, DetectedAt = TimeGenerated
| order by DetectedAt desc
'''
  }
  {
    name: 'dead-lettered-messages'
    title: 'Dead-lettered messages (7 days)'
    query: '''
union
  (AppTraces
   | where Message startswith "dead-lettered message "
   | parse Message with "dead-lettered message " MessageId " of request " RequestId ": " Reason
   | project TimeGenerated, Source = OperationName, RequestId, MessageId, Reason, Count = 1.0),
  (AzureMetrics
   | where ResourceProvider == "MICROSOFT.SERVICEBUS" and MetricName == "DeadletteredMessages" and Maximum > 0
   | project TimeGenerated, Source = "namespace metric", RequestId = "", MessageId = "", Reason = "messages waiting in a dead-letter queue", Count = Maximum)
| where TimeGenerated > ago(7d)
| order by TimeGenerated desc
'''
  }
]

var workbookItems = [for item in queries: {
  type: 3
  name: item.name
  content: {
    version: 'KqlItem/1.0'
    title: item.title
    query: item.query
    size: 0
    queryType: 0
    resourceType: 'microsoft.operationalinsights/workspaces'
  }
}]

// Alert queries: a row means the condition held in the window. The dead-letter line is the same
// from both dead-letter triggers (onboarding_dead_letters, background_dead_letters; the saved query
// names the one in Source, the function name), and the metric counts every queue of the namespace.
var deadLetterAlertQuery = '''
union
  (AppTraces | where Message startswith "dead-lettered message "),
  (AzureMetrics | where ResourceProvider == "MICROSOFT.SERVICEBUS" and MetricName == "DeadletteredMessages" and Maximum > 0)
'''
var rotationFailedAlertQuery = '''
AppTraces
| where Message startswith "Published event palette.onboarding.rotation.failed "
'''

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

resource savedQueries 'Microsoft.OperationalInsights/workspaces/savedSearches@2020-08-01' = [for item in queries: {
  parent: logAnalytics
  name: item.name
  properties: {
    category: 'Palette onboarding'
    displayName: item.title
    query: item.query
    version: 2
  }
}]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(logAnalytics.id, 'palette-onboarding-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Palette onboarding'
    category: 'workbook'
    sourceId: logAnalytics.id
    serializedData: string({
      version: 'Notebook/1.0'
      items: workbookItems
      fallbackResourceIds: [
        logAnalytics.id
      ]
    })
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'palette'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var alertActions = empty(alertEmail) ? [] : [
  actionGroup.id
]

resource deadLetterAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'dead-lettered-messages'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Palette onboarding: dead-lettered messages'
    description: 'A message reached a dead-letter queue (or the dead-letter trigger handled one) in the last 15 minutes. Run the "Dead-lettered messages" query.'
    severity: 2
    enabled: true
    scopes: [
      logAnalytics.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: deadLetterAlertQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: alertActions
    }
  }
}

resource rotationFailedAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'rotation-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Palette onboarding: rotation.failed'
    description: 'The app announced palette.onboarding.rotation.failed in the last 15 minutes: a client secret was not rotated and keeps its old expiry.'
    severity: 1
    enabled: true
    scopes: [
      logAnalytics.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: rotationFailedAlertQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: alertActions
    }
  }
}

output appInsightsName string = appInsights.name
output logAnalyticsName string = logAnalytics.name
output logAnalyticsId string = logAnalytics.id

// What the app's identity needs to check an onboarded principal's Azure permissions
// (azure.permissions on a request): read role assignments, role definitions and deny assignments,
// nothing else (Reader would also read every resource). A custom role with those three actions,
// defined and assigned at one subscription; main.bicep deploys it to each subscription listed.
// Subscriptions of another Entra tenant cannot be read by this identity at all.
targetScope = 'subscription'

param identityPrincipalId string

var readerActions = [
  'Microsoft.Authorization/roleAssignments/read'
  'Microsoft.Authorization/roleDefinitions/read'
  'Microsoft.Authorization/denyAssignments/read'
]

resource permissionsReader 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'palette-onboarding-permissions-reader')
  properties: {
    roleName: 'Palette onboarding permissions reader (${subscription().subscriptionId})'
    description: 'Reads role assignments, role definitions and deny assignments, to check that an onboarded service principal holds what Palette needs.'
    type: 'CustomRole'
    permissions: [
      {
        actions: readerActions
        notActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

resource permissionsReaderAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, identityPrincipalId, permissionsReader.id)
  properties: {
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: permissionsReader.id
  }
}

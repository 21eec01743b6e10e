"""Domain package of the Palette Azure onboarding app: request models, the onboarding pipeline,
rotation, and one small client per external service. Knows nothing about Azure Functions."""

"""One small client per external service (Palette, Microsoft Graph, ...).

Each client takes ``endpoint`` plus a credential and keyword-only options, owns one HTTP session,
supports ``with`` and raises azure-core exceptions. Import from the modules
(``shared.clients.palette``), so loading one client never imports the others.
"""

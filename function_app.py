"""The Function App: creates the app and registers one blueprint per trigger group.

Kept import-light on purpose: the Azure SDKs are imported when a function first runs, not when the
host indexes the app, which shortens cold start (see bench/cold_start.py).
"""

import azure.functions as func

from functions.http_api import bp as http_bp
from functions.queue import bp as queue_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(queue_bp)
app.register_functions(http_bp)

"""The Function App: creates the app and registers one blueprint per trigger group.

Kept import-light on purpose: the Azure SDKs are imported when a function first runs, not when the
host indexes the app, which shortens cold start (see bench/cold_start.py).
"""

import logging

import azure.functions as func

from functions.http_api import bp as http_bp
from functions.maintenance import bp as maintenance_bp
from functions.queue import bp as queue_bp
from functions.rotations import bp as rotations_bp
from functions.warmup import bp as warmup_bp

# The Azure SDKs log every HTTP call and AMQP frame at INFO; only their warnings are worth keeping.
for _noisy in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity", "azure.servicebus",
               "uamqp"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(queue_bp)
app.register_functions(http_bp)
app.register_functions(maintenance_bp)
app.register_functions(rotations_bp)
app.register_functions(warmup_bp)

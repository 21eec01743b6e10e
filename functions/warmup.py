"""The warmup trigger: a new instance gets ready before the platform sends it work.

Where the platform calls it (an instance added on scale-out), the first onboarding on the instance
finds the clients built, the events link open, the vault's challenge and token known, the state
table's connection up and RSA keys made ahead. Everything is still built lazily on first use where
it is not called (a restart, plans without it), so nothing depends on it.
"""

from __future__ import annotations

import time

import azure.functions as func
from azure.functions.warmup import WarmUpContext  # noqa: TC002 - the worker reads the annotation at run time (not re-exported by azure.functions 1.26)

from shared.logs import get_logger

bp = func.Blueprint()
logger = get_logger(__name__)


@bp.function_name("warmup")
@bp.warm_up_trigger("warmup")
def warmup(warmup: WarmUpContext) -> None:
    from functions import dependencies

    began = time.monotonic()
    failed = dependencies.get().warm_up()
    logger.info("warm-up done in %.0f ms%s", (time.monotonic() - began) * 1000,
                f"; not warmed: {', '.join(failed)}" if failed else "")

"""Microsoft's Python worker, run in this process: the local host talks to it as the Functions host
does, with the language-worker protocol's messages, and the worker indexes the app, converts the
bindings and calls the functions.

The worker library (``azure-functions-runtime``) and the protocol's generated Python modules (the
``FunctionRpc`` protobuf messages, shipped in ``azure-functions-runtime-v1``'s wheel) come from the
package registry: ``scripts/bootstrap.sh`` installs them, pinned by ``devstack/worker-requirements.txt``,
into ``.devstack/tools/functions-worker`` (apart from the app's environment: the v1 wheel carries a
top-level ``tests`` package, and the worker declares Python 3.13, which it does not need here).
Nothing of it is copied into this repository.

What the Functions host does and the worker does not (routing, function keys, settling messages,
schedules, timeouts, concurrency) stays in :mod:`devstack.runner`. There is no gRPC here: the host
and the worker share this process, so each message goes to the worker's handler directly, on the
worker's own event loop, as its dispatcher would pass it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import threading
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future

WORKER_DIR = Path(__file__).resolve().parent.parent / ".devstack" / "tools" / "functions-worker"
REQUIREMENTS = Path(__file__).resolve().parent / "worker-requirements.txt"
#: Where the v1 worker's wheel keeps the generated protocol modules, inside WORKER_DIR.
PROTOS_DIR = Path("tests") / "protos"
#: The host version the local host says it is (the worker logs it).
HOST_VERSION = "4.1045.0"


class WorkerMissingError(RuntimeError):
    """The worker is not installed: ``scripts/bootstrap.sh`` installs it."""


def _load_protos(worker_dir: Path) -> types.SimpleNamespace:
    """The protocol's message classes, as the worker's dispatcher hands them over (``protos``).

    The generated package's ``__init__`` also imports the gRPC stubs, which need grpcio; nothing here
    speaks gRPC, so the messages are loaded as a package of their own without that ``__init__``."""
    name = "functions_worker_protos"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(worker_dir / PROTOS_DIR)]
        sys.modules[name] = package
    rpc = importlib.import_module(f"{name}.FunctionRpc_pb2")
    nullable = importlib.import_module(f"{name}.shared.NullableTypes_pb2")
    messages = {n: getattr(rpc, n) for n in dir(rpc) if not n.startswith("_")}
    messages.update({n: getattr(nullable, n) for n in dir(nullable) if n.startswith("Nullable")})
    return types.SimpleNamespace(**messages)


class _Request:
    """What the worker's dispatcher passes each handler: the message and the host's properties."""

    def __init__(self, name: str, message: Any, properties: dict[str, Any]) -> None:
        self.name = name
        self.request = message
        self.properties = properties


class Worker:
    """The worker, on an event loop of its own. One per process, as a worker process holds one app:
    the library keeps its registry in module globals."""

    _current: Worker | None = None
    _lock = threading.Lock()

    def __init__(self, worker_dir: Path = WORKER_DIR) -> None:
        if not (worker_dir / "azure_functions_runtime").is_dir():
            raise WorkerMissingError(
                f"Microsoft's Python worker is not installed in {worker_dir}; run scripts/bootstrap.sh")
        if str(worker_dir) not in sys.path:
            sys.path.append(str(worker_dir))  # after the app's own packages: they win any clash
        self.protos = _load_protos(worker_dir)
        self._events = importlib.import_module("azure_functions_runtime.handle_event")
        self._runtime = importlib.import_module("azure_functions_runtime")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="functions-worker", daemon=True)
        self._thread.start()

    @classmethod
    def get(cls) -> Worker:
        with cls._lock:
            if cls._current is None:
                cls._current = Worker()
            return cls._current

    def _send(self, handler: str, message: Any, *, timeout: float | None = None) -> Any:
        """Hand one protocol message to the worker's handler and wait for its response."""
        request = _Request(handler, message, {"host": "127.0.0.1", "protos": self.protos})
        future = asyncio.run_coroutine_threadsafe(getattr(self._events, handler)(request), self._loop)
        return future.result(timeout)

    def index(self, app: Any, app_directory: Path) -> list[Any]:
        """Start the worker as the host does, with ``app`` as the function app: a
        ``WorkerInitRequest``, the app indexed, a ``FunctionsMetadataRequest`` and a
        ``FunctionLoadRequest`` per function. Returns each function's ``RpcFunctionMetadata``.

        In Azure the worker imports ``function_app.py`` from the app's directory and indexes the
        app object it finds there; here the app object is handed to the same indexer
        (``process_indexed_function``), since one process hosts test apps of its own too.

        Raises
        ------
        RuntimeError
            The worker could not index the app (its message says why).
        """
        import tempfile

        p = self.protos
        with tempfile.TemporaryDirectory(prefix="functions-worker-") as empty:
            init = self._send("worker_init_request", p.StreamingMessage(worker_init_request=p.WorkerInitRequest(
                host_version=HOST_VERSION, function_app_directory=empty)))
        _raise_on_failure(init.result, "start")
        loader = importlib.import_module("azure_functions_runtime.loader")
        results, _ = loader.process_indexed_function(self.protos, vars(self._events)["_functions"],
                                                     app.get_functions(), str(app_directory))
        vars(self._events)["_metadata_result"] = results
        metadata = self._send("functions_metadata_request", p.StreamingMessage(
            functions_metadata_request=p.FunctionsMetadataRequest(function_app_directory=str(app_directory))))
        _raise_on_failure(metadata.result, "list the app's functions")
        functions = list(metadata.function_metadata_results)
        for function in functions:
            loaded = self._send("function_load_request", p.StreamingMessage(
                function_load_request=p.FunctionLoadRequest(function_id=function.function_id, metadata=function)))
            _raise_on_failure(loaded.result, f"load {function.name}")
        # The worker runs sync functions on one pool (PYTHON_THREADPOOL_THREAD_COUNT, default
        # min(32, CPUs + 4)), as its dispatcher starts it once the host has initialised it.
        self._runtime.start_threadpool_executor()
        return functions

    def submit(self, function_id: str, input_data: list[Any], trigger_metadata: dict[str, Any], *,
               timeout: float) -> Future[Any]:
        """Send one ``InvocationRequest``; the future holds its ``InvocationResponse``, or
        :class:`TimeoutError` once the function ran past ``timeout`` (the host's
        ``functionTimeout``: the host would restart the worker; here the call is left to finish on
        its own and its result ignored)."""
        import uuid

        p = self.protos
        request = p.InvocationRequest(invocation_id=str(uuid.uuid4()), function_id=function_id,
                                      input_data=input_data, trigger_metadata=trigger_metadata)
        message = _Request("invocation_request", p.StreamingMessage(invocation_request=request),
                           {"host": "127.0.0.1", "protos": self.protos})

        async def invoke() -> Any:
            try:
                return await asyncio.wait_for(self._events.invocation_request(message), timeout)
            except TimeoutError:
                raise TimeoutError(f"Timeout value of {timeout:.0f} s was exceeded by the function") from None
        return asyncio.run_coroutine_threadsafe(invoke(), self._loop)

    # -- typed data, as the host converts values ---------------------------------------------------

    def typed(self, value: Any) -> Any:
        """A value as the host sends it: bytes as bytes, text as a string, anything else (a number,
        a date, a map) as JSON (the worker reads no other kinds); None as empty data."""
        p = self.protos
        if value is None:
            return p.TypedData()
        if isinstance(value, bytes):
            return p.TypedData(bytes=value)
        if isinstance(value, str):
            return p.TypedData(string=value)
        return p.TypedData(json=json.dumps(value, default=_iso))

    def binding(self, name: str, data: Any) -> Any:
        return self.protos.ParameterBinding(name=name, data=data)


def _iso(value: Any) -> str:
    iso = getattr(value, "isoformat", None)
    if iso is None:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return str(iso())


def _raise_on_failure(result: Any, what: str) -> None:
    if result.status != result.Success:
        raise RuntimeError(f"The Python worker could not {what}: {result.exception.message}")


def failure_of(response: Any) -> str | None:
    """Why an invocation failed (the exception's type and message), or None when it succeeded."""
    if response.result.status == response.result.Success:
        return None
    exception = response.result.exception
    return exception.message or exception.source or "the function failed"

"""RSA key pairs for the SSH keys the onboarding generates, made before a request needs one.

An RSA 4096 key takes 0.1 to 1 s of CPU to generate (about 0.3 s on average, with a long tail):
longer than the rest of an onboarding's SSH key branch, and so, made inside the step, the
onboarding's critical path. OpenSSL releases the GIL while it searches for primes, so the work can
run beside the round trips. Each worker keeps a couple of keys made ahead, refilled on background
threads after one is taken; a request that finds none makes its own, started when its delivery
starts (beside the check's lookups).

A key made ahead lives only in this process's memory until a request takes it: it is never
written anywhere, logged or handed out twice; :meth:`KeyPairs.close` drops those not taken.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

from shared.concurrency import in_thread

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey


def new_rsa_key() -> RSAPrivateKey:
    """The private half of a generated SSH key: RSA 4096, what every Azure VM image accepts."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


class KeyPairs:
    """Keys made ahead, at most ``ready`` of them (none until the first is asked for)."""

    def __init__(self, *, ready: int = 2, generate: Callable[[], RSAPrivateKey] = new_rsa_key) -> None:
        self._target = ready
        self._generate = generate
        self._lock = threading.Lock()
        self._ready: list[RSAPrivateKey] = []
        self._making = 0
        self._closed = False

    def take(self) -> Future[RSAPrivateKey]:
        """A key for one request: done already when one was made ahead, else being made now."""
        with self._lock:
            key = self._ready.pop() if self._ready else None
            self._refill_locked()
        if key is None:
            return in_thread(self._generate, name="onboarding-keygen")
        future: Future[RSAPrivateKey] = Future()
        future.set_result(key)
        return future

    def fill(self) -> None:
        """Start making keys up to the stock (a worker warming up); returns at once."""
        with self._lock:
            self._refill_locked()

    @property
    def ready(self) -> int:
        """How many keys wait to be taken."""
        with self._lock:
            return len(self._ready)

    def close(self) -> None:
        """Drop the keys made ahead (keys still being made are dropped when done)."""
        with self._lock:
            self._closed = True
            self._ready.clear()

    def _refill_locked(self) -> None:
        while not self._closed and len(self._ready) + self._making < self._target:
            self._making += 1
            in_thread(self._make_one, name="onboarding-keygen-ahead")

    def _make_one(self) -> None:
        try:
            key = self._generate()
        finally:
            with self._lock:
                self._making -= 1
        with self._lock:
            if not self._closed and len(self._ready) < self._target:
                self._ready.append(key)

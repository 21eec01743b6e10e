"""Entity configuration: which queues, topics and subscriptions the broker serves.

Service Bus entities are created ahead of time (Bicep in Azure); the stand-in takes the same
settings from a small JSON file so the local stack and the infrastructure agree on names, lock
duration, max delivery count and duplicate detection. A setting left out takes Service Bus's own
default, so an entity behaves here as one created in Azure without it: duplicate detection off,
lock duration 1 minute, 10 deliveries before the dead-letter queue (``tests/test_infra.py``
checks ``devstack/entities.json`` against ``infra/app/servicebus.bicep`` on that basis).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

# Service Bus's defaults for an entity created without the setting.
DEFAULT_LOCK_DURATION_SECONDS = 60.0  # lockDuration PT1M
DEFAULT_MAX_DELIVERY_COUNT = 10
DEFAULT_REQUIRES_DUPLICATE_DETECTION = False
DEFAULT_DUPLICATE_DETECTION_WINDOW_SECONDS = 600.0  # duplicateDetectionHistoryTimeWindow PT10M, once on
# The window Service Bus accepts: 20 seconds to 7 days.
MIN_DUPLICATE_DETECTION_WINDOW_SECONDS = 20.0
MAX_DUPLICATE_DETECTION_WINDOW_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True)
class SubscriptionConfig:
    """A topic subscription; receivers address it as ``<topic>/Subscriptions/<name>``."""

    name: str
    lock_duration_seconds: float = DEFAULT_LOCK_DURATION_SECONDS
    max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT


@dataclass(frozen=True)
class QueueConfig:
    """A queue. Duplicate detection is off (``None``), as in Service Bus, unless given a window."""

    name: str
    lock_duration_seconds: float = DEFAULT_LOCK_DURATION_SECONDS
    max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT
    duplicate_detection_window_seconds: float | None = None


@dataclass(frozen=True)
class TopicConfig:
    """A topic and its subscriptions; every message sent to it is copied to each subscription."""

    name: str
    subscriptions: tuple[SubscriptionConfig, ...] = ()
    duplicate_detection_window_seconds: float | None = None


def validate_entities(queues: list[QueueConfig], topics: list[TopicConfig]) -> None:
    """Reject configurations Service Bus itself would refuse, so mistakes show at start-up.

    Raises
    ------
    ValueError
        A name is empty or contains ``/``, a name is used twice in the namespace (names are
        case-insensitive) or in one topic, or a lock duration, max delivery count or
        duplicate-detection window is out of range.
    """
    seen: set[str] = set()
    named: list[QueueConfig | TopicConfig] = [*queues, *topics]
    for entity in named:
        _check_name(entity.name)
        key = entity.name.lower()
        if key in seen:
            raise ValueError(f"Entity name {entity.name!r} is used twice (names are case-insensitive).")
        seen.add(key)
        window = entity.duplicate_detection_window_seconds
        if window is not None and not (MIN_DUPLICATE_DETECTION_WINDOW_SECONDS <= window
                                       <= MAX_DUPLICATE_DETECTION_WINDOW_SECONDS):
            raise ValueError(f"{entity.name!r}: duplicateDetectionWindowSeconds must be from 20 seconds to "
                             "7 days (Service Bus's range).")
    for queue in queues:
        _check_receive_settings(queue.name, queue.lock_duration_seconds, queue.max_delivery_count)
    for topic in topics:
        names: set[str] = set()
        for sub in topic.subscriptions:
            _check_name(sub.name)
            if sub.name.lower() in names:
                raise ValueError(f"Topic {topic.name!r} has subscription {sub.name!r} twice.")
            names.add(sub.name.lower())
            _check_receive_settings(f"{topic.name}/{sub.name}", sub.lock_duration_seconds,
                                    sub.max_delivery_count)


def load_entities(path: Path) -> tuple[list[QueueConfig], list[TopicConfig]]:
    """Read ``{"queues": [...], "topics": [...]}`` (camelCase keys, as in the Bicep parameters).

    Missing settings take the Service Bus defaults. Duplicate detection is off unless
    ``"requiresDuplicateDetection": true``; its window, ``duplicateDetectionWindowSeconds``,
    defaults to 10 minutes and is refused without it (a window alone would be silently ignored).

    Raises
    ------
    ValueError
        The file is not valid JSON, has unknown keys, or describes an invalid namespace.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected an object with 'queues' and 'topics'.")
    _only_keys(document, {"queues", "topics"}, str(path))
    queues = [_queue(item) for item in _items(document, "queues")]
    topics = [_topic(item) for item in _items(document, "topics")]
    validate_entities(queues, topics)
    return queues, topics


def _queue(item: dict[str, Any]) -> QueueConfig:
    _only_keys(item, {"name", "lockDurationSeconds", "maxDeliveryCount", "requiresDuplicateDetection",
                      "duplicateDetectionWindowSeconds"}, "queue")
    return QueueConfig(
        name=_name(item),
        lock_duration_seconds=float(item.get("lockDurationSeconds", DEFAULT_LOCK_DURATION_SECONDS)),
        max_delivery_count=int(item.get("maxDeliveryCount", DEFAULT_MAX_DELIVERY_COUNT)),
        duplicate_detection_window_seconds=_window(item),
    )


def _topic(item: dict[str, Any]) -> TopicConfig:
    _only_keys(item, {"name", "subscriptions", "requiresDuplicateDetection", "duplicateDetectionWindowSeconds"},
               "topic")
    subscriptions = []
    for sub in _items(item, "subscriptions"):
        _only_keys(sub, {"name", "lockDurationSeconds", "maxDeliveryCount"}, "subscription")
        subscriptions.append(SubscriptionConfig(
            name=_name(sub),
            lock_duration_seconds=float(sub.get("lockDurationSeconds", DEFAULT_LOCK_DURATION_SECONDS)),
            max_delivery_count=int(sub.get("maxDeliveryCount", DEFAULT_MAX_DELIVERY_COUNT)),
        ))
    return TopicConfig(name=_name(item), subscriptions=tuple(subscriptions),
                       duplicate_detection_window_seconds=_window(item))


def _items(document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = document.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"'{key}' must be a list of objects.")
    return items


def _name(item: dict[str, Any]) -> str:
    name = item.get("name")
    if not isinstance(name, str):
        raise ValueError(f"Every entity needs a string 'name': {item!r}")
    return name


def _window(item: dict[str, Any]) -> float | None:
    """The duplicate-detection window in seconds, or ``None`` when detection is off."""
    required = item.get("requiresDuplicateDetection", DEFAULT_REQUIRES_DUPLICATE_DETECTION)
    if not isinstance(required, bool):
        raise ValueError(f"{item.get('name')!r}: requiresDuplicateDetection must be true or false.")
    if not required:
        if "duplicateDetectionWindowSeconds" in item:
            raise ValueError(f"{item.get('name')!r}: duplicateDetectionWindowSeconds applies only with "
                             '"requiresDuplicateDetection": true.')
        return None
    value = item.get("duplicateDetectionWindowSeconds", DEFAULT_DUPLICATE_DETECTION_WINDOW_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{item.get('name')!r}: duplicateDetectionWindowSeconds must be a number of seconds.")
    return float(value)


def _only_keys(item: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ValueError(f"Unknown {what} setting(s) {unknown}; allowed: {sorted(allowed)}.")


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith("$"):
        raise ValueError(f"Invalid entity name {name!r}.")


def _check_receive_settings(name: str, lock_duration: float, max_delivery_count: int) -> None:
    if not 0 < lock_duration <= 300:
        raise ValueError(f"{name!r}: lockDurationSeconds must be in (0, 300] (Service Bus caps it at 5 min).")
    if max_delivery_count < 1:
        raise ValueError(f"{name!r}: maxDeliveryCount must be at least 1.")

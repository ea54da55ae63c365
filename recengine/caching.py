"""`PerModelCache`: things derived from a trained model's training data, built once per model."""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Generic, TypeVar

from recengine.models.base import Recommender

__all__ = ["PerModelCache"]

T = TypeVar("T")


class PerModelCache(Generic[T]):
    """Values built from a fitted model (e.g. co-watch weights from its training interactions),
    kept beside the model, never in it (cached models are shared read-only), and dropped with it.

    A value belongs to one training: it is rebuilt when the model's training CSR of seen items
    changes (a refit). Builds are single-flight: callers asking at once for a value not yet built
    wait for one build instead of each starting their own, so a background warm-up and the first
    page that needs the value do the work once.
    """

    def __init__(self) -> None:
        self._values: weakref.WeakKeyDictionary[Recommender, tuple[object, T]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # guards _values; held only briefly
        self._build_lock = threading.Lock()  # one build at a time

    def _cached(self, model: Recommender, training: object) -> T | None:
        with self._lock:
            hit = self._values.get(model)
        return hit[1] if hit is not None and hit[0] is training else None

    def get(self, model: Recommender, build: Callable[[], T]) -> T:
        """The value for `model`'s current training, from `build()` the first time."""
        training = getattr(model, "_seen_items", None)
        value = self._cached(model, training)
        if value is not None:
            return value
        with self._build_lock:
            value = self._cached(model, training)  # built by another caller while this one waited
            if value is None:
                value = build()
                with self._lock:
                    self._values[model] = (training, value)
        return value

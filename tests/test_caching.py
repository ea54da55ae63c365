"""PerModelCache: built once per model and training, single-flight, dropped with the model."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import torch

from recengine.caching import PerModelCache


class Holder:
    """Stands in for a fitted model: weak-referenceable, with a training CSR of seen items."""

    def __init__(self) -> None:
        self._seen_items = torch.arange(3)


def test_builds_once_per_training_and_again_after_a_refit():
    cache, model, calls = PerModelCache(), Holder(), []

    def build() -> list:
        calls.append(1)
        return [len(calls)]

    first = cache.get(model, build)
    assert cache.get(model, build) is first and len(calls) == 1
    model._seen_items = torch.arange(5)  # a refit replaces the training CSR
    assert cache.get(model, build) == [2] and len(calls) == 2
    assert cache.get(Holder(), build) == [3]  # another model, its own value


def test_callers_asking_at_once_share_one_build():
    cache, model, calls = PerModelCache(), Holder(), []
    started = threading.Event()

    def slow_build() -> object:
        calls.append(1)
        started.set()
        time.sleep(0.2)
        return object()

    results = [None] * 4

    def ask(slot: int) -> None:
        results[slot] = cache.get(model, slow_build)

    threads = [threading.Thread(target=ask, args=(slot,)) for slot in range(4)]
    threads[0].start()
    started.wait(5)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and all(result is results[0] for result in results)


def test_values_go_with_their_model():
    cache, model = PerModelCache(), Holder()
    cache.get(model, lambda: np.zeros(3))
    assert len(cache._values) == 1
    del model
    gc.collect()
    assert len(cache._values) == 0


def test_the_apps_warm_up_builds_what_the_first_rating_needs(monkeypatch):
    """After `ui.cached.warm_up`, the first rating's co-watch weights and questions cost no build."""
    import ui.cached
    from recengine.data.synthetic import generate_synthetic
    from recengine.models.mf import MatrixFactorization, MFConfig
    from recengine.onboarding import Questioner
    from recengine.recommend import CoWatch

    model = MatrixFactorization(MFConfig(embedding_dim=4, epochs=1), device="cpu").fit(generate_synthetic(60, 40, 800, seed=3))
    ui.cached.warm_up(model)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("built again after the warm-up")

    monkeypatch.setattr(CoWatch, "from_interactions", no_build)
    monkeypatch.setattr(Questioner, "from_interactions", no_build)
    assert CoWatch.of_model(model) is not None and Questioner.of_model(model) is not None

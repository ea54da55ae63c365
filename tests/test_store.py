"""The model store: keys and slugs, train-once caching, safe loading, single flight, background jobs."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np
import pytest
import torch

import recengine
from recengine.data.dataset import Dataset, IdMap
from recengine.models import base
from recengine.models.base import EpochEvent, Recommender, TrainingError
from recengine.store import (
    ArtefactInfo,
    ModelKey,
    ModelStore,
    TrainingCancelled,
    TrainingJob,
    VALIDATION_FRACTION,
    default_store,
)


# --- a tiny, controllable model family ----------------------------------------------------------
@dataclass(frozen=True)
class FakeConfig:
    epochs: int = 3
    epoch_seconds: float = 0.0  # sleep per epoch, to widen race windows
    fail_at_epoch: int = 0  # raise TrainingError in this epoch (0 = never)
    early_stopping_patience: int = 0
    shift: float = 0.0  # added to every prediction, so configs give different models

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


class FakeMean(Recommender):
    """Predicts each item's training mean (+ shift); counts its fits; records what it was fitted on."""

    name: ClassVar[str] = "fake-mean"
    Config: ClassVar[type] = FakeConfig
    explicit: ClassVar[bool] = True
    fits: ClassVar[list[tuple[int, int | None]]] = []  # (len(train), len(valid)) per fit
    fits_lock: ClassVar[threading.Lock] = threading.Lock()

    def _fit(self, train, valid, on_epoch) -> None:
        with self.fits_lock:
            self.fits.append((len(train), None if valid is None else len(valid)))
        sums = np.bincount(train.items, weights=train.ratings, minlength=train.n_items)
        counts = np.bincount(train.items, minlength=train.n_items)
        self.means = torch.from_numpy(np.where(counts > 0, sums / np.maximum(counts, 1), 3.0).astype(np.float32))
        for epoch in range(1, self.config.epochs + 1):
            time.sleep(self.config.epoch_seconds)
            if epoch == self.config.fail_at_epoch:
                raise TrainingError(f"loss became NaN in epoch {epoch} (boom)")
            on_epoch(EpochEvent(epoch, self.config.epochs, 1.0 / epoch, self.config.epoch_seconds, {"rmse": 1.0}))

    def _scores(self) -> torch.Tensor:
        return self.means + self.config.shift

    def predict(self, user_idx, item_idx):
        return self._scores()[torch.as_tensor(np.asarray(item_idx), dtype=torch.long)].numpy()

    def score_users(self, user_idx):
        return self._scores().expand(len(np.asarray(user_idx)), -1).clone()

    def item_factors(self):
        return torch.stack([self.means, torch.ones_like(self.means)], dim=1).numpy()

    def fold_in(self, ratings: Mapping[int, float]):
        return np.zeros(1, dtype=np.float32)

    def score_folded(self, user_repr):
        return self._scores().clone()

    def _state(self):
        return {"means": self.means}

    def _restore(self, state):
        self.means = state["means"]


@pytest.fixture(autouse=True)
def fake_model():
    """Register the fake family for one test only (the contract test must never see it)."""
    base.register(FakeMean)
    FakeMean.fits = []
    yield FakeMean
    base._REGISTRY.pop(FakeMean.name, None)


def tiny_dataset(n_users: int = 12, n_items: int = 8, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, size=60, replace=False)
    users, items = pairs // n_items, pairs % n_items
    ratings = rng.integers(1, 6, size=len(pairs)).astype(np.float32)
    return Dataset.from_arrays(
        "tiny",
        users,
        items,
        ratings,
        user_map=IdMap(np.arange(1, n_users + 1)),
        item_map=IdMap(np.arange(101, 101 + n_items)),
        rating_scale=(1.0, 5.0),
    )


@pytest.fixture
def tiny() -> Dataset:
    return tiny_dataset()


@pytest.fixture
def store(tmp_path, tiny) -> ModelStore:
    return ModelStore(tmp_path / "models", device="cpu", datasets={"tiny": tiny})


# --- keys ---------------------------------------------------------------------------------------
def test_same_key_same_slug_and_readable_name(store):
    first = store.key("tiny", "fake-mean", epochs=2)
    second = store.key("tiny", "fake-mean", "random", 42, epochs=2.0)  # converted to the declared int
    assert first == second and hash(first) == hash(second) and first.slug == second.slug
    assert first.config == FakeConfig(epochs=2)
    assert first.slug.startswith("tiny__random-s42__fake-mean__")
    assert len(first.slug.rsplit("__", 1)[1]) == 10
    assert {first: 1}[second] == 1


def test_hyper_parameters_as_a_mapping_may_be_called_seed(store):
    key = store.key("ml-100k", "mf", "random", 42, hyper={"seed": 7, "epochs": "3"}, embedding_dim=8)
    assert key.seed == 42 and key.config.seed == 7 and key.config.epochs == 3 and key.config.embedding_dim == 8
    assert key.slug != store.key("ml-100k", "mf", hyper={"epochs": 3, "embedding_dim": 8}).slug


def test_different_hyper_parameters_split_seed_or_version_change_the_slug(store, monkeypatch):
    key = store.key("tiny", "fake-mean", epochs=2)
    assert store.key("tiny", "fake-mean", epochs=3).slug != key.slug
    assert store.key("tiny", "fake-mean", seed=7, epochs=2).slug != key.slug
    assert store.key("tiny", "fake-mean", split="user", epochs=2).slug != key.slug
    before = key.digest
    assert store.key("tiny", "fake-mean", epochs=2).digest == before
    monkeypatch.setattr(recengine, "__version__", "999.0")
    assert store.key("tiny", "fake-mean", epochs=2).digest != before  # new code, new folders


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "nope", "model": "fake-mean"}, "dataset must be one of"),
        ({"dataset": "tiny", "model": "nope"}, "model must be one of"),
        ({"dataset": "tiny", "model": "fake-mean", "split": "nope"}, "split must be one of"),
        ({"dataset": "tiny", "model": "fake-mean", "seed": "x"}, "seed must be an integer"),
        ({"dataset": "tiny", "model": "fake-mean", "epochz": 3}, "unknown hyper-parameter"),
        ({"dataset": "tiny", "model": "fake-mean", "epochs": "many"}, "epochs must be int"),
        ({"dataset": "tiny", "model": "fake-mean", "epochs": 0}, "epochs must be >= 1"),
    ],
)
def test_key_validation_errors_name_what_is_allowed(store, kwargs, message):
    with pytest.raises(ValueError, match=message):
        store.key(**kwargs)


def test_model_key_rejects_non_config():
    with pytest.raises(ValueError, match="config"):
        ModelKey("tiny", "random", 42, "fake-mean", {"epochs": 2})


# --- datasets and splits ------------------------------------------------------------------------
def test_dataset_loader_runs_once_across_threads(tmp_path, tiny):
    calls = []

    def load() -> Dataset:
        calls.append(1)
        time.sleep(0.05)
        return tiny

    store = ModelStore(tmp_path, device="cpu", datasets={"lazy": load})
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.dataset("lazy"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and all(result is tiny for result in results)


def test_split_is_memoised_and_missing_folds_are_clear(store, tiny):
    split = store.split("tiny", "random", 42)
    assert store.split("tiny", "random", 42) is split
    assert len(split.train) + len(split.test) == len(tiny) and len(split.test) == 12
    with pytest.raises(ValueError, match="u1"):
        store.split("tiny", "u1", 42)
    with pytest.raises(ValueError, match="split must be one of"):
        store.split("tiny", "nope", 42)


# --- get_or_train -------------------------------------------------------------------------------
def test_trains_once_then_memory_then_disk_with_identical_predictions(store, tmp_path, tiny, fake_model):
    key = store.key("tiny", "fake-mean", shift=0.25)
    assert store.get(key) is None
    events: list[EpochEvent] = []
    model = store.get_or_train(key, on_epoch=events.append)
    assert len(fake_model.fits) == 1 and [e.epoch for e in events] == [1, 2, 3]
    assert store.get_or_train(key) is model and store.get(key) is model
    assert len(fake_model.fits) == 1

    meta = json.loads((tmp_path / "models" / key.slug / "meta.json").read_text())
    assert {k: meta[k] for k in ("dataset", "split", "seed", "model")} == {"dataset": "tiny", "split": "random", "seed": 42, "model": "fake-mean"}
    assert meta["config"] == dataclasses.asdict(key.config) and meta["device"] == "CPU"
    assert set(meta["metrics"]) >= {"rmse", "mae", "precision@10", "ndcg@10", "mrr"}
    assert store.metrics(key) == meta["metrics"]

    fresh = ModelStore(tmp_path / "models", device="cpu", datasets={"tiny": tiny})
    loaded = fresh.get_or_train(key)
    assert len(fake_model.fits) == 1  # read from disk, not retrained
    users, items = np.arange(12) % tiny.n_users, np.arange(12) % tiny.n_items
    np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
    assert fresh.metrics(key) == meta["metrics"]


def test_metrics_match_an_independent_evaluation(store, fake_model):
    from recengine.evaluation import evaluate_model

    key = store.key("tiny", "fake-mean")
    model = store.get_or_train(key)
    split = store.split("tiny", "random", 42)
    expected = evaluate_model(model, split.train, split.test, k=10)
    assert store.metrics(key) == pytest.approx(expected)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_weights_are_warned_about_and_retrained(store, tmp_path, tiny, fake_model, damage):
    key = store.key("tiny", "fake-mean")
    store.get_or_train(key)
    weights = tmp_path / "models" / key.slug / "weights.pt"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 3]))
    else:
        weights.unlink()

    fresh = ModelStore(tmp_path / "models", device="cpu", datasets={"tiny": tiny})
    with pytest.warns(RuntimeWarning, match="damaged or incompatible"):
        assert fresh.get(key) is None
    with pytest.warns(RuntimeWarning, match="retrained"):
        model = fresh.get_or_train(key)
    assert len(fake_model.fits) == 2 and model.is_fitted

    again = ModelStore(tmp_path / "models", device="cpu", datasets={"tiny": tiny})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert again.get(key) is not None  # the folder was replaced by a good one


def test_folder_of_another_key_is_not_loaded(store, tmp_path, fake_model):
    key = store.key("tiny", "fake-mean", shift=1.0)
    other = store.key("tiny", "fake-mean", shift=2.0)
    store.get_or_train(key)
    (tmp_path / "models" / key.slug).rename(tmp_path / "models" / other.slug)
    fresh = ModelStore(tmp_path / "models", device="cpu", datasets={"tiny": store.dataset("tiny")})
    with pytest.warns(RuntimeWarning, match="incompatible"):
        assert fresh.get(other) is None


def test_four_threads_same_key_train_once(store, fake_model):
    key = store.key("tiny", "fake-mean", epoch_seconds=0.05)
    barrier = threading.Barrier(4)
    results: list[Recommender] = []

    def ask() -> None:
        barrier.wait()
        results.append(store.get_or_train(key))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(fake_model.fits) == 1
    assert len(results) == 4 and all(result is results[0] for result in results)


def test_two_stores_on_one_folder_train_once(tmp_path, tiny, fake_model):
    """Two stores share nothing in memory: the lock file and the re-read of the folder do it."""
    stores = [ModelStore(tmp_path, device="cpu", datasets={"tiny": tiny}) for _ in range(2)]
    key = stores[0].key("tiny", "fake-mean", epoch_seconds=0.05)
    barrier = threading.Barrier(2)
    results = []

    def ask(store: ModelStore) -> None:
        barrier.wait()
        results.append(store.get_or_train(key))

    threads = [threading.Thread(target=ask, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(fake_model.fits) == 1 and len(results) == 2


def test_validation_is_test_for_monitoring_and_carved_from_train_for_early_stopping(store, fake_model):
    split = store.split("tiny", "random", 42)
    store.get_or_train(store.key("tiny", "fake-mean"))
    assert fake_model.fits[-1] == (len(split.train), len(split.test))
    store.get_or_train(store.key("tiny", "fake-mean", early_stopping_patience=2))
    held_out = round(len(split.train) * VALIDATION_FRACTION)
    assert fake_model.fits[-1] == (len(split.train) - held_out, held_out)


def test_training_error_propagates_and_saves_nothing(store, tmp_path):
    key = store.key("tiny", "fake-mean", fail_at_epoch=2)
    with pytest.raises(TrainingError, match="boom"):
        store.get_or_train(key)
    assert not (tmp_path / "models" / key.slug).exists() and store.get(key) is None


# --- background jobs ----------------------------------------------------------------------------
def test_background_job_runs_to_done_with_events(store, fake_model):
    key = store.key("tiny", "fake-mean", epochs=4, epoch_seconds=0.02)
    job = store.start_training(key)
    assert store.start_training(key) is job  # single flight while it runs
    assert job.wait(timeout=10)
    assert job.state == "done" and job.error is None
    assert [e.epoch for e in job.events] == [1, 2, 3, 4]
    assert job.progress == 1.0 and job.eta_seconds == 0.0 and job.elapsed > 0
    assert job.model is store.get(key) and job.metrics == store.metrics(key)
    assert store.jobs() == [job]
    assert len(fake_model.fits) == 1

    again = store.start_training(key)  # finished jobs are not reused; a trained key is done at once
    assert again is not job and again.wait(timeout=10) and again.state == "done" and again.events == []
    assert len(fake_model.fits) == 1 and store.jobs() == [job, again]


def test_cancel_stops_at_an_epoch_boundary_and_writes_nothing(store, tmp_path):
    key = store.key("tiny", "fake-mean", epochs=200, epoch_seconds=0.02)
    job = store.start_training(key)
    deadline = time.monotonic() + 10
    while not job.events and time.monotonic() < deadline:
        time.sleep(0.005)
    assert job.state == "running" and 0 < job.progress < 1
    job.cancel()
    assert job.wait(timeout=10)
    assert job.state == "cancelled" and "cancelled" in job.error
    assert len(job.events) < 200
    assert not (tmp_path / "models" / key.slug).exists() and store.get(key) is None


def test_get_does_not_wait_for_a_training_in_progress(store):
    key = store.key("tiny", "fake-mean", epochs=300, epoch_seconds=0.02)
    job = store.start_training(key)
    deadline = time.monotonic() + 10
    while not job.events and time.monotonic() < deadline:
        time.sleep(0.005)
    assert store.get(key) is None
    assert job.state == "running"  # get returned while the job was still training
    job.cancel()
    assert job.wait(timeout=10) and job.state == "cancelled"


def test_foreground_request_joins_a_background_job(store, fake_model):
    key = store.key("tiny", "fake-mean", epochs=5, epoch_seconds=0.02)
    job = store.start_training(key)
    deadline = time.monotonic() + 10
    while job.state == "queued" and time.monotonic() < deadline:
        time.sleep(0.005)
    model = store.get_or_train(key)
    assert job.wait(timeout=10) and job.model is model
    assert len(fake_model.fits) == 1


def test_cancel_while_queued_never_starts(tmp_path, tiny, fake_model):
    store = ModelStore(tmp_path, device="cpu", datasets={"tiny": tiny}, max_background_jobs=1)
    first = store.start_training(store.key("tiny", "fake-mean", epochs=5, epoch_seconds=0.02))
    second = store.start_training(store.key("tiny", "fake-mean", epochs=2, shift=1.0))
    assert second.state == "queued"
    second.cancel()
    assert first.wait(timeout=10) and second.wait(timeout=10)
    assert first.state == "done" and second.state == "cancelled" and second.events == []
    assert len(fake_model.fits) == 1


def test_failed_job_reports_the_message(store, tmp_path):
    key = store.key("tiny", "fake-mean", fail_at_epoch=2)
    job = store.start_training(key)
    assert job.wait(timeout=10)
    assert job.state == "failed" and "TrainingError" in job.error and "boom" in job.error
    assert len(job.events) == 1 and job.model is None
    assert not (tmp_path / "models" / key.slug).exists()


def test_job_progress_and_eta_from_events(store):
    job = TrainingJob(store.key("tiny", "fake-mean"))
    assert job.state == "queued" and job.progress == 0.0 and job.eta_seconds is None and job.elapsed == 0.0
    job.events.append(EpochEvent(1, 5, 0.9, 1.0))
    job.events.append(EpochEvent(2, 5, 0.8, 3.0))
    assert job.progress == pytest.approx(0.4)
    assert job.eta_seconds == pytest.approx(2.0 * 3)  # mean epoch 2 s x 3 epochs left


def test_cancelled_exception_propagates_from_get_or_train(store):
    key = store.key("tiny", "fake-mean")

    def stop(event: EpochEvent) -> None:
        raise TrainingCancelled("stop")

    with pytest.raises(TrainingCancelled):
        store.get_or_train(key, on_epoch=stop)
    assert store.get(key) is None


# --- artefacts ----------------------------------------------------------------------------------
def test_artefacts_list_and_delete(store, tmp_path, tiny):
    key = store.key("tiny", "fake-mean", shift=0.5)
    store.get_or_train(key)
    (tmp_path / "models" / "junk").mkdir()  # folders without meta.json are skipped
    [info] = store.artefacts()
    assert isinstance(info, ArtefactInfo)
    assert (info.slug, info.dataset, info.split, info.seed, info.model) == (key.slug, "tiny", "random", 42, "fake-mean")
    assert info.config["shift"] == 0.5 and "rmse" in info.metrics and info.loaded
    folder = tmp_path / "models" / key.slug
    assert info.size_bytes == sum(f.stat().st_size for f in folder.iterdir()) and info.saved_at

    fresh = ModelStore(tmp_path / "models", device="cpu", datasets={"tiny": tiny})
    assert not fresh.artefacts()[0].loaded
    assert store.delete(key) and not folder.exists() and store.get(key) is None
    assert store.artefacts() == [] and not store.delete(key)
    with pytest.raises(ValueError):
        store.delete("../elsewhere")


def test_default_store_is_one_per_process(monkeypatch, tmp_path):
    import recengine.store as store_module

    monkeypatch.setattr(store_module, "_DEFAULT_STORE", None)
    monkeypatch.setenv("RECENGINE_MODELS_DIR", str(tmp_path / "elsewhere"))
    first = default_store()
    assert default_store() is first and first.root == tmp_path / "elsewhere"


# --- a real model family through the store -------------------------------------------------------
def test_real_mf_round_trip_through_the_store(tmp_path):
    from recengine.data.synthetic import generate_synthetic

    data = generate_synthetic(n_users=40, n_items=30, n_interactions=600, seed=1)
    store = ModelStore(tmp_path, device="cpu", datasets={"small-synthetic": data})
    key = store.key("small-synthetic", "mf", epochs=2, embedding_dim=4, batch_size=128)
    model = store.get_or_train(key)
    fresh = ModelStore(tmp_path, device="cpu", datasets={"small-synthetic": data})
    loaded = fresh.get(key)
    assert loaded is not None and loaded is not model
    users, items = np.repeat(np.arange(40), 30), np.tile(np.arange(30), 40)
    np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
    assert np.isfinite(fresh.metrics(key)["rmse"])


# --- hostile keys, leftovers of killed saves, uploads replaced under the same name ------------------
def test_negative_and_huge_seeds(store):
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0 \(the split's seed\), got -1"):
        store.key("tiny", "fake-mean", seed=-1)
    with pytest.raises(ValueError, match="ModelKey.seed must be an int >= 0"):
        ModelKey("tiny", "random", -1, "fake-mean", FakeConfig())
    assert store.key("tiny", "fake-mean", seed=2**63).seed == 2**63  # a split seed has no upper bound


def test_long_input_is_quoted_clipped_in_key_errors(store):
    for kwargs in ({"dataset": "x" * 10_000}, {"split": "x" * 10_000}, {"model": "x" * 10_000}, {"epochs": "x" * 10_000}):
        arguments = {"dataset": "tiny", "model": "fake-mean", **kwargs}
        with pytest.raises(ValueError) as caught:
            store.key(**arguments)
        message = str(caught.value)
        assert "x" * 78 + "…" in message and "x" * 80 not in message, message[:200]


def test_keys_without_a_data_version_keep_their_digest(store):
    """Artefacts saved before data versions existed keep their folder names."""
    import hashlib

    key = store.key("tiny", "fake-mean", epochs=2)
    assert key.data_version == ""
    payload = json.dumps(
        {"config": dataclasses.asdict(key.config), "recengine": recengine.__version__, "format": base.ARTEFACT_FORMAT},
        sort_keys=True, default=str,
    )  # fmt: skip
    assert key.digest == hashlib.sha256(payload.encode()).hexdigest()[:10]
    versioned = dataclasses.replace(key, data_version="0123456789abcdef")
    assert versioned != key and versioned.digest != key.digest
    assert versioned.slug.rsplit("__", 1)[0] == key.slug.rsplit("__", 1)[0]


def _leftover(root, name: str, age_seconds: float):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "weights.pt").write_bytes(b"half")
    stamp = time.time() - age_seconds
    os.utime(folder, (stamp, stamp))
    return folder


def test_a_new_store_sweeps_leftovers_of_killed_saves_older_than_an_hour(tmp_path, tiny):
    from recengine.store import STALE_STAGING_SECONDS

    root = tmp_path / "models"
    slug = "tiny__random-s42__fake-mean__0123456789"
    old = [
        _leftover(root, f".{slug}.k3x_9abc", STALE_STAGING_SECONDS + 60),  # Recommender.save's staging folder
        _leftover(root, f".{slug}.old-123-456", STALE_STAGING_SECONDS + 60),  # the folder a save moved aside
        _leftover(root, f".{slug}.deleted-123-456", 2 * STALE_STAGING_SECONDS),  # ModelStore.delete's trash
    ]
    young = _leftover(root, f".{slug}.a1b2c3d4", 60)  # a save that may still be running
    kept = [
        young,
        _leftover(root, ".locks", 10 * STALE_STAGING_SECONDS),
        _leftover(root, slug, 10 * STALE_STAGING_SECONDS),  # a model folder, however old
        _leftover(root, ".something-else.k3x_9abc", 10 * STALE_STAGING_SECONDS),  # not a slug: not ours
    ]
    outside = _leftover(tmp_path, "outside", 0)
    (root / f".{slug}.linkdir1").symlink_to(outside, target_is_directory=True)
    os.utime(root / f".{slug}.linkdir1", (0, 0), follow_symlinks=False)

    ModelStore(root, device="cpu", datasets={"tiny": tiny})
    assert [path.exists() for path in old] == [False, False, False]
    assert all(path.exists() for path in kept)
    assert (root / f".{slug}.linkdir1").is_symlink() and (outside / "weights.pt").exists()  # links are not followed
    ModelStore(tmp_path / "not-there-yet", device="cpu")  # a missing root is fine


def _write_upload(tmp_path, name: str, seed: int) -> None:
    from recengine.data.upload import import_upload

    rng = np.random.default_rng(seed)
    pairs = rng.choice(15 * 10, size=90, replace=False)
    rows = [f"{u + 1},{i + 1},{r}" for u, i, r in zip(pairs // 10, pairs % 10, rng.integers(1, 6, size=90))]
    source = tmp_path / f"{name}-{seed}.csv"
    source.write_text("userId,movieId,rating\n" + "\n".join(rows) + "\n")
    import_upload(source, name, overwrite=True)


def test_an_upload_replaced_under_the_same_name_gets_new_keys_and_data(tmp_path):
    from recengine.data import upload

    _write_upload(tmp_path, "mine", seed=1)
    store = ModelStore(tmp_path / "models", device="cpu")
    assert "mine" in store.dataset_names()
    first = store.key("mine", "fake-mean", epochs=1)
    manifest = json.loads((upload.uploads_dir() / "mine" / "manifest.json").read_text())
    assert first.data_version == manifest["files"]["ratings.npz"]["sha256"][:16]
    model = store.get_or_train(first)
    assert store.meta(first)["data_version"] == first.data_version
    old_ratings = store.dataset("mine").ratings.copy()
    assert store.key("mine", "fake-mean", epochs=1) == first  # same content, same key: reused
    assert store.get_or_train(store.key("mine", "fake-mean", epochs=1)) is model

    _write_upload(tmp_path, "mine", seed=2)  # `import --force` with other ratings
    second = store.key("mine", "fake-mean", epochs=1)
    assert second.data_version != first.data_version and second.slug != first.slug
    fresh = store.dataset("mine")  # the store read the new content, not its cached copy
    assert not np.array_equal(fresh.ratings, old_ratings)
    assert store.get(second) is None
    retrained = store.get_or_train(second)
    assert retrained is not model and len(FakeMean.fits) == 2
    np.testing.assert_allclose(retrained.means.numpy(), _item_means(store.split("mine", "random", 42).train))


def _item_means(train: Dataset) -> np.ndarray:
    sums = np.bincount(train.items, weights=train.ratings, minlength=train.n_items)
    counts = np.bincount(train.items, minlength=train.n_items)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 3.0).astype(np.float32)

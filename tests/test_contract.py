"""The Recommender contract, run against every registered model family on a checkerboard.

The checkerboard (recengine.data.synthetic.checkerboard) has two groups of users, each rating
its own half of the items 5 and a couple of the other half 1, with exactly one own-group item
left unrated per user: every model must put that item first for that user.
A model family added to the registry is tested here with no new test code; tiny training
settings for the checkerboard go in CONTRACT_SETTINGS.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from recengine.data.dataset import Dataset
from recengine.data.synthetic import checkerboard
from recengine.models.base import (
    ArtefactError,
    EpochEvent,
    NotFittedError,
    Recommender,
    create_model,
    model_names,
)

N_USERS, N_ITEMS = 24, 12
HALF_ITEMS = N_ITEMS // 2

#: Hyper-parameters that make each family learn the tiny checkerboard in well under a second.
CONTRACT_SETTINGS: dict[str, dict] = {
    "mf": {"epochs": 60, "batch_size": 32, "learning_rate": 0.05, "embedding_dim": 4, "seed": 0},
    "neural": {"epochs": 60, "batch_size": 32, "learning_rate": 0.01, "seed": 0},
    "als": {"factors": 4, "iterations": 10, "regularization": 1.0, "min_rating": 2.0, "seed": 0},
    # Next-item models learn from the order of each user's ratings; min_rating=3 leaves the 1-star
    # other-group ratings out of their histories (they are not what a user wants next).
    **{
        name: {"epochs": 30, "batch_size": 16, "learning_rate": 0.02, "embedding_dim": 8, "dropout": 0.0,
               "min_rating": 3.0, "seed": 0, **extra}
        for name, extra in (("seq-pooling", {}), ("seq-lstm", {}), ("seq-transformer", {"weight_decay": 0.5}))
    },
}


def group_of_item(item: int) -> int:
    return 0 if item < HALF_ITEMS else 1


def group_of_user(user: int) -> int:
    return 0 if user < N_USERS // 2 else 1


@pytest.fixture(scope="module")
def board():
    # Each user's ratings in a random (seeded) time order. In checkerboard's own order every user
    # walks their group in index order, so a next-item model never sees the first item of a
    # group follow anything and cannot learn that a user's unrated own-group item comes next.
    plain = checkerboard(N_USERS, N_ITEMS)
    shuffled = np.lexsort((np.random.default_rng(0).random(len(plain)), plain.users))
    timestamps = np.empty_like(plain.timestamps)
    timestamps[shuffled] = plain.timestamps  # rows are sorted by user: each user keeps their own times
    return Dataset.from_arrays(
        plain.name, plain.users, plain.items, plain.ratings, timestamps, user_map=plain.user_map,
        item_map=plain.item_map, catalogue=plain.catalogue, rating_scale=plain.rating_scale,
    )


def _make(name: str) -> Recommender:
    return create_model(name, device="cpu", **CONTRACT_SETTINGS.get(name, {}))


@pytest.fixture(scope="module", params=model_names())
def fitted(request, board):
    events: list[EpochEvent] = []
    model = _make(request.param).fit(board, on_epoch=events.append)
    return model, events


def test_registry_has_the_spine_model() -> None:
    assert "mf" in model_names()


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="model must be one of"):
        create_model("no-such-model")


@pytest.mark.parametrize("name", model_names())
def test_unfitted_model_refuses_to_predict(name: str) -> None:
    model = _make(name)
    with pytest.raises(NotFittedError):
        model.recommend(0, 3)
    with pytest.raises(NotFittedError):
        model.similar_items(0, 3)


@pytest.mark.parametrize("name", model_names())
def test_unknown_hyper_parameter_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        create_model(name, not_a_setting=1)


def test_fit_reports_each_epoch(fitted) -> None:
    model, events = fitted
    assert events, "fit must call on_epoch at least once"
    assert [e.epoch for e in events] == list(range(1, len(events) + 1))
    assert all(e.epochs == events[0].epochs for e in events)
    assert all(np.isfinite(e.loss) and e.seconds >= 0 for e in events)
    assert model.history == events and model.fit_seconds > 0


def test_predict_and_score_shapes(fitted, board) -> None:
    model, _ = fitted
    users = np.array([0, 1, N_USERS - 1])
    items = np.array([0, 5, N_ITEMS - 1])
    predicted = model.predict(users, items)
    assert predicted.shape == (3,) and predicted.dtype == np.float32 and np.isfinite(predicted).all()
    scores = model.score_users(users)
    assert tuple(scores.shape) == (3, N_ITEMS) and scores.dtype == torch.float32
    if model.explicit:
        low, high = board.rating_scale
        assert ((predicted >= low - 0.5) & (predicted <= high + 0.5)).all()
        # a liked own-group item is predicted above a disliked other-group item
        assert model.predict(np.array([0]), np.array([1]))[0] > model.predict(np.array([0]), np.array([HALF_ITEMS]))[0]


@pytest.mark.parametrize("user", [0, 3, N_USERS // 2, N_USERS - 1])
def test_recommend_puts_the_unrated_own_group_item_first(fitted, board, user: int) -> None:
    model, _ = fitted
    items, scores = model.recommend(user, k=N_ITEMS)
    seen = set(board.items_of(user).tolist())
    assert not seen & set(items.tolist()), "seen items must be excluded"
    assert len(items) == N_ITEMS - len(seen) and len(set(items.tolist())) == len(items)
    assert np.all(np.diff(scores) <= 1e-6), "scores must come best first"
    assert group_of_item(int(items[0])) == group_of_user(user)
    everything, _ = model.recommend(user, k=N_ITEMS, exclude_seen=False)
    assert len(everything) == N_ITEMS


def test_similar_items_stay_in_group(fitted) -> None:
    model, _ = fitted
    for item in (0, N_ITEMS - 1):
        similar, scores = model.similar_items(item, k=3)
        assert item not in similar.tolist()
        assert len(similar) == 3 and np.all(np.diff(scores) <= 1e-6)
        assert group_of_item(int(similar[0])) == group_of_item(item)


def test_item_factors_shape(fitted) -> None:
    model, _ = fitted
    factors = model.item_factors()
    assert factors.ndim == 2 and factors.shape[0] == N_ITEMS and np.isfinite(factors).all()


def test_fold_in_new_user_gets_their_group(fitted) -> None:
    model, _ = fitted
    low, high = model.rating_scale
    likes_b = {HALF_ITEMS: high, HALF_ITEMS + 1: high, HALF_ITEMS + 2: high, 0: low}
    items, _ = model.recommend_for(likes_b, k=4)
    assert not set(items.tolist()) & set(likes_b)
    assert group_of_item(int(items[0])) == 1
    vector = model.user_vector(model.fold_in(likes_b))
    if vector is not None:
        assert vector.shape == (model.item_factors().shape[1],)


@pytest.mark.parametrize("bad", [{0: float("nan")}, {0: 99.0}, {0: -1.0}, {N_ITEMS + 5: 4.0}, {-1: 4.0}])
def test_fold_in_rejects_bad_ratings(fitted, bad) -> None:
    model, _ = fitted
    with pytest.raises(ValueError):
        model.recommend_for(bad, k=3)


def test_save_load_round_trip_is_exact(fitted, tmp_path) -> None:
    model, _ = fitted
    path = model.save(tmp_path / "artefact", meta={"dataset": "checkerboard"})
    loaded = Recommender.load(path, device="cpu")
    assert type(loaded) is type(model) and loaded.config == model.config
    users = np.arange(N_USERS)
    items = np.arange(N_ITEMS)
    np.testing.assert_array_equal(loaded.predict(users[:N_ITEMS], items), model.predict(users[:N_ITEMS], items))
    torch.testing.assert_close(loaded.score_users(users), model.score_users(users), rtol=0, atol=0)
    for user in (0, N_USERS - 1):
        np.testing.assert_array_equal(loaded.recommend(user, 5)[0], model.recommend(user, 5)[0])
    profile = {0: 5.0, 1: 4.5, HALF_ITEMS: 1.0}
    np.testing.assert_array_equal(loaded.recommend_for(profile, 5)[1], model.recommend_for(profile, 5)[1])
    np.testing.assert_array_equal(loaded.item_factors(), model.item_factors())
    assert loaded.user_map.ids.tolist() == model.user_map.ids.tolist()
    assert [e.epoch for e in loaded.history] == [e.epoch for e in model.history]
    assert Recommender.read_meta(path)["dataset"] == "checkerboard"


def test_damaged_artefact_is_refused(fitted, tmp_path) -> None:
    model, _ = fitted
    path = model.save(tmp_path / "artefact")
    weights = path / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="checksum"):
        Recommender.load(path)
    shutil.rmtree(path)
    path = model.save(tmp_path / "artefact")
    (path / "ids.npz").unlink()
    with pytest.raises(ArtefactError, match="missing"):
        Recommender.load(path)


def test_save_replaces_an_existing_artefact_atomically(fitted, tmp_path) -> None:
    model, _ = fitted
    target = tmp_path / "artefact"
    model.save(target, meta={"run": 1})
    model.save(target, meta={"run": 2})
    assert Recommender.read_meta(target)["run"] == 2
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "artefact"]
    assert leftovers == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_artefact_moves_between_devices(fitted, tmp_path) -> None:
    model, _ = fitted
    path = model.save(tmp_path / "artefact")
    on_gpu = Recommender.load(path, device="cuda")
    assert on_gpu.score_users(np.array([0])).device.type == "cuda"
    back = Recommender.load(on_gpu.save(tmp_path / "from-gpu"), device="cpu")
    torch.testing.assert_close(back.score_users(np.arange(N_USERS)), model.score_users(np.arange(N_USERS)), rtol=1e-5, atol=1e-5)

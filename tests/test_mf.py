"""Biased matrix factorisation: learning, the rating range, fold-in, explanations, persistence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from recengine.data.dataset import Dataset, IdMap
from recengine.models.base import NotFittedError, Recommender, create_model, model_names
import recengine.models.mf as mf_module
from recengine.models.mf import MatrixFactorization, MFConfig, automatic_batch_size

from conftest import require_release

# Small, fast settings for a 60 x 40 rank-3 matrix: full-batch Adam.
TINY = MFConfig(
    embedding_dim=4, epochs=100, batch_size=4096, learning_rate=0.1, reg_factors=0.001, reg_bias=0.0, reg_uniform=0.0,
    init_std=0.1, range_margin=0.5, fold_in_reg=0.1,
)


def low_rank(n_users: int = 60, n_items: int = 40, rank: int = 3, density: float = 0.6, seed: int = 0):
    """A rank-3 (plus biases) rating matrix on the 1..5 scale; `density` of it observed for training.

    Returns (train, test, full matrix (n_users, n_items) float64)."""
    rng = np.random.default_rng(seed)
    full = (
        3.0
        + rng.normal(0, 0.7, (n_users, rank)) @ rng.normal(0, 0.7, (n_items, rank)).T
        + rng.normal(0, 0.4, (n_users, 1))
        + rng.normal(0, 0.4, (1, n_items))
    )
    full = np.clip(full, 1.0, 5.0)
    observed = rng.random((n_users, n_items)) < density
    user_map, item_map = IdMap(np.arange(n_users) + 100), IdMap(np.arange(n_items) + 1000)

    def part(mask: np.ndarray) -> Dataset:
        users, items = np.nonzero(mask)
        return Dataset.from_arrays("lowrank", users, items, full[users, items], user_map=user_map, item_map=item_map, rating_scale=(1.0, 5.0))

    return part(observed), part(~observed), full


@pytest.fixture(scope="module")
def data():
    return low_rank()


@pytest.fixture(scope="module")
def model(data) -> MatrixFactorization:
    train, _, _ = data
    return MatrixFactorization(TINY, device="cpu").fit(train)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def logit_target(model: MatrixFactorization, ratings: np.ndarray) -> np.ndarray:
    lo, hi = model.output_range
    fraction = np.clip((ratings - lo) / (hi - lo), 1e-3, 1 - 1e-3)
    return np.log(fraction / (1 - fraction))


def test_registered_under_mf():
    assert "mf" in model_names()
    assert isinstance(create_model("mf", device="cpu", embedding_dim=3), MatrixFactorization)


def test_learns_a_low_rank_matrix(model, data):
    train, test, full = data
    held_out = rmse(model.predict(test.users, test.items), test.ratings)
    assert held_out < 0.15 < 0.9 < full.std()
    assert rmse(model.predict(train.users, train.items), train.ratings) < 0.1
    assert [e.epoch for e in model.history] == list(range(1, 101))
    assert model.history[-1].loss < model.history[0].loss


def test_predictions_stay_on_the_rating_scale(model, data):
    train, _, _ = data
    users, items = np.meshgrid(np.arange(train.n_users), np.arange(train.n_items), indexing="ij")
    predicted = model.predict(users.ravel(), items.ravel())
    assert predicted.dtype == np.float32
    assert predicted.min() >= 1.0 and predicted.max() <= 5.0
    scores = model.score_users(np.arange(train.n_users))
    lo, hi = model.output_range
    assert (lo, hi) == (0.5, 5.5)
    assert scores.shape == (train.n_users, train.n_items) and scores.dtype == torch.float32
    assert float(scores.min()) > lo and float(scores.max()) < hi
    # score_users is the unclipped form of predict
    assert np.allclose(np.clip(scores.numpy(), 1.0, 5.0).ravel(), predicted, atol=1e-5)


def test_without_sigmoid_range_output_is_the_raw_score(data):
    train, test, _ = data
    model = MatrixFactorization(replace(TINY, use_sigmoid_range=False), device="cpu").fit(train)
    network = model.network
    u, i = torch.tensor([0, 5]), torch.tensor([3, 7])
    raw = network(u, i).detach().numpy()
    assert np.allclose(model.score_users(np.array([0, 5])).numpy()[[0, 1], [3, 7]], raw, atol=1e-5)
    assert rmse(model.predict(test.users, test.items), test.ratings) < 0.3


def test_uniform_regularisation_shrinks_rows_without_ratings():
    users, items = np.meshgrid(np.arange(6), np.arange(4), indexing="ij")  # item 4 is never rated
    train = Dataset.from_arrays(
        "small", users.ravel(), items.ravel(), (users.ravel() + items.ravel()) % 5 + 1.0,
        user_map=IdMap(np.arange(6)), item_map=IdMap(np.arange(5)), rating_scale=(1.0, 5.0),
    )
    config = replace(TINY, epochs=20, init_std=0.5)
    plain = MatrixFactorization(config, device="cpu").fit(train).item_factors()
    shrunk = MatrixFactorization(replace(config, reg_uniform=0.5), device="cpu").fit(train).item_factors()
    generator = torch.Generator().manual_seed(config.seed)
    torch.randn((6, 4), generator=generator)  # the user factors are drawn first
    initial_items = torch.randn((5, 4), generator=generator).numpy() * config.init_std
    assert np.allclose(plain[4], initial_items[4])  # no rating and no reg_uniform: the row never moves
    assert np.linalg.norm(shrunk[4]) < 0.5 * np.linalg.norm(initial_items[4])


def test_sparse_adam_trains_the_same_model(data):
    train, test, _ = data
    model = MatrixFactorization(replace(TINY, optimizer="sparse_adam", learning_rate=0.05), device="cpu").fit(train)
    assert rmse(model.predict(test.users, test.items), test.ratings) < 0.3


def test_same_seed_same_model(data):
    train, test, _ = data
    config = replace(TINY, epochs=5)
    first = MatrixFactorization(config, device="cpu").fit(train).predict(test.users, test.items)
    second = MatrixFactorization(config, device="cpu").fit(train).predict(test.users, test.items)
    third = MatrixFactorization(replace(config, seed=7), device="cpu").fit(train).predict(test.users, test.items)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, third)


def test_validation_figures_and_early_stopping(data):
    train, test, _ = data
    model = MatrixFactorization(replace(TINY, epochs=30, early_stopping_patience=3), device="cpu").fit(train, test)
    curve = [e.metrics["rmse"] for e in model.history]
    assert all("mae" in e.metrics for e in model.history)
    # the model ends with the best epoch's weights
    assert rmse(model.predict(test.users, test.items), test.ratings) == pytest.approx(min(curve), abs=1e-5)


def test_fold_in_matches_brute_force_ridge(model, data):
    train, _, _ = data
    ratings = {3: 5.0, 10: 1.0, 17: 4.0, 25: 2.5, 31: 3.0}
    rep = model.fold_in(ratings)
    assert rep.shape == (TINY.embedding_dim + 1,) and rep.dtype == np.float32
    # Augmented least squares [X; sqrt(λ) I] u = [t - base; 0], solved by lstsq.
    items = np.array(sorted(ratings))
    q = model.item_factors().astype(np.float64)[items]
    base = model.network.item_bias.weight.detach().double().numpy()[items, 0] + float(model.network.global_bias.detach())
    targets = logit_target(model, np.array([ratings[i] for i in items]))
    design = np.vstack([np.hstack([q, np.ones((len(items), 1))]), np.sqrt(TINY.fold_in_reg) * np.eye(q.shape[1] + 1)])
    rhs = np.concatenate([targets - base, np.zeros(q.shape[1] + 1)])
    expected = np.linalg.lstsq(design, rhs, rcond=None)[0]
    assert np.allclose(rep, expected, atol=1e-5)
    assert np.array_equal(model.user_vector(rep), rep[:-1])
    # score_folded applies the same model to the folded representation
    x = model.item_factors() @ rep[:-1] + rep[-1] + model.network.item_bias.weight.detach().numpy()[:, 0] + float(model.network.global_bias.detach())
    lo, hi = model.output_range
    assert np.allclose(model.score_folded(rep).numpy(), lo + (hi - lo) / (1 + np.exp(-x)), atol=1e-5)


def test_fold_in_of_a_trained_user_reproduces_their_scores(model, data):
    train, _, full = data
    indptr, items, ratings = train.user_item_csr()
    for user in (0, 7, 33):
        span = slice(indptr[user], indptr[user + 1])
        rep = model.fold_in(dict(zip(items[span].tolist(), ratings[span].tolist())))
        folded = model.score_folded(rep).numpy()
        trained = model.score_users(np.array([user]))[0].numpy()
        assert np.corrcoef(folded, trained)[0, 1] > 0.97
        assert rmse(np.clip(folded, 1, 5), full[user]) < 0.3


def test_fold_in_without_ratings_gives_the_item_baseline(model):
    rep = model.fold_in({})
    assert np.array_equal(rep, np.zeros(TINY.embedding_dim + 1, dtype=np.float32))
    assert model.explain({}, 0) == []


def test_fold_in_rejects_bad_ratings(model):
    with pytest.raises(ValueError, match="not in this model's catalogue"):
        model.fold_in({999: 4.0})
    with pytest.raises(ValueError, match="between 1.0 and 5.0"):
        model.fold_in({0: 9.0})


def test_explain_contributions_sum_to_the_score_above_the_baseline(model):
    ratings = {3: 5.0, 10: 1.0, 17: 4.0, 25: 2.5, 31: 3.0}
    rep = model.fold_in(ratings).astype(np.float64)
    for item in (0, 12, 39):
        explanation = model.explain(ratings, item)
        assert sorted(i for i, _ in explanation) == sorted(ratings)
        contributions = [c for _, c in explanation]
        assert contributions == sorted(contributions, reverse=True)
        q_i = model.item_factors()[item].astype(np.float64)
        assert sum(contributions) == pytest.approx(float(q_i @ rep[:-1] + rep[-1]), abs=1e-5)


def test_explain_a_single_rating_by_hand(model):
    # One rating: u = (A⁻¹ [q_j;1]) (t_j - base_j) with A = [q_j;1][q_j;1]ᵀ + λI, so by Sherman-Morrison
    # the contribution to item i is [q_i;1]·[q_j;1] (t_j - base_j) / (λ + |[q_j;1]|²).
    j, i = 4, 9
    q = np.hstack([model.item_factors().astype(np.float64), np.ones((model.n_items, 1))])
    base_j = float(model.network.item_bias.weight[j, 0].detach()) + float(model.network.global_bias.detach())
    centred = logit_target(model, np.array([4.5]))[0] - base_j
    expected = q[i] @ q[j] * centred / (TINY.fold_in_reg + q[j] @ q[j])
    [(item, contribution)] = model.explain({j: 4.5}, i)
    assert item == j and contribution == pytest.approx(expected, rel=1e-6)


def test_explain_many_equals_explain_per_item_exactly(model, monkeypatch):
    ratings = {3: 5.0, 10: 1.0, 17: 4.0, 25: 2.5, 31: 3.0}
    items = np.array([0, 12, 39, 3, 12, 7])  # a rated item and a repeat among them
    expected = [model.explain(ratings, int(i)) for i in items]
    assert model.explain_many(ratings, items) == expected
    monkeypatch.setattr(mf_module, "_EXPLAIN_CHUNK", 1)  # one candidate per chunk: same numbers
    assert model.explain_many(ratings, items) == expected
    assert model.explain_many(ratings, np.array([], dtype=np.int64)) == []
    assert model.explain_many({}, items[:2]) == [[], []]


def test_explain_many_matches_a_brute_force_solve_per_item(model):
    ratings = {3: 5.0, 10: 1.0, 17: 4.0}
    rated = np.array(sorted(ratings))
    q = np.hstack([model.item_factors().astype(np.float64), np.ones((model.n_items, 1))])
    base = model.network.item_bias.weight[:, 0].detach().double().numpy() + float(model.network.global_bias.detach())
    centred = logit_target(model, np.array([ratings[j] for j in rated])) - base[rated]
    gram = q[rated].T @ q[rated] + TINY.fold_in_reg * np.eye(q.shape[1])
    for item, explanation in zip((5, 20), model.explain_many(ratings, np.array([5, 20]))):
        weights = q[rated] @ np.linalg.inv(gram) @ q[item]
        assert dict(explanation) == pytest.approx(dict(zip(rated.tolist(), weights * centred)), rel=1e-9, abs=1e-12)


def test_explain_many_rejects_bad_indices(model):
    with pytest.raises(IndexError, match="item index 40 out of range 0..39"):
        model.explain_many({3: 4.0}, np.array([1, 40]))
    with pytest.raises(TypeError, match="integer item indices"):
        model.explain_many({3: 4.0}, np.array([1.5]))


def test_explanations_follow_a_refit(data):
    # The float64 item table behind fold-in and explain is cached per fitted network: a second
    # fit on other ratings must not reuse the first one's.
    train, _, _ = data
    model = MatrixFactorization(replace(TINY, epochs=20), device="cpu").fit(train)
    ratings = {3: 5.0, 10: 1.0}
    first = model.explain(ratings, 0)
    flipped = Dataset.from_arrays(
        "flipped", train.users, train.items, 6.0 - train.ratings, train.timestamps,
        user_map=train.user_map, item_map=train.item_map, rating_scale=train.rating_scale,
    )
    model.fit(flipped)
    rep = model.fold_in(ratings).astype(np.float64)
    second = model.explain(ratings, 0)
    assert second != first
    q_0 = model.item_factors()[0].astype(np.float64)
    assert sum(c for _, c in second) == pytest.approx(float(q_0 @ rep[:-1] + rep[-1]), abs=1e-5)


@pytest.mark.parametrize(
    "n_ratings, batch", [(0, 1024), (80_000, 1024), (102_400, 1024), (102_500, 1025), (1_000_000, 10_000), (10**7, 10**5)]
)
def test_automatic_batch_size(n_ratings, batch):
    assert automatic_batch_size(n_ratings) == batch


def test_automatic_batch_is_the_default_and_the_tuned_1024_on_small_data(data):
    train, test, _ = data
    assert MFConfig().batch_size == 0
    automatic = MatrixFactorization(replace(TINY, batch_size=0, epochs=3), device="cpu").fit(train)
    fixed = MatrixFactorization(replace(TINY, batch_size=1024, epochs=3), device="cpu").fit(train)
    assert np.array_equal(automatic.predict(test.users, test.items), fixed.predict(test.users, test.items))


def test_automatic_batch_grows_with_the_ratings(monkeypatch):
    seen = []
    monkeypatch.setattr(mf_module, "train_loop", lambda *args, **kwargs: seen.append(args[4].batch_size))
    n = 250_000
    rng = np.random.default_rng(0)
    big = Dataset.from_arrays(
        "big", rng.integers(0, 500, n), rng.integers(0, 300, n), rng.integers(1, 6, n).astype(np.float32),
        np.arange(n), user_map=IdMap(np.arange(500)), item_map=IdMap(np.arange(300)), rating_scale=(1.0, 5.0),
    )
    MatrixFactorization(replace(TINY, batch_size=0), device="cpu").fit(big)
    MatrixFactorization(replace(TINY, batch_size=64), device="cpu").fit(big)
    assert seen == [2500, 64]


def test_recommend_for_excludes_rated_items(model):
    ratings = {0: 5.0, 1: 5.0, 2: 1.0}
    items, scores = model.recommend_for(ratings, k=5)
    assert len(items) == 5 and not set(items.tolist()) & set(ratings)
    assert list(scores) == sorted(scores, reverse=True)
    expected = model.score_folded(model.fold_in(ratings)).numpy()
    assert np.allclose(scores, expected[items])


def test_save_load_round_trip(model, data, tmp_path):
    train, test, _ = data
    path = model.save(tmp_path / "mf")
    loaded = Recommender.load(path, device="cpu")
    assert isinstance(loaded, MatrixFactorization) and loaded.config == model.config
    assert np.array_equal(loaded.predict(test.users, test.items), model.predict(test.users, test.items))
    assert torch.equal(loaded.score_users(np.arange(5)), model.score_users(np.arange(5)))
    ratings = {3: 5.0, 10: 1.0}
    assert np.array_equal(loaded.fold_in(ratings), model.fold_in(ratings))
    assert loaded.recommend(0, k=3)[0].tolist() == model.recommend(0, k=3)[0].tolist()
    assert len(loaded.history) == len(model.history)


def test_similar_items_and_factors(model):
    factors = model.item_factors()
    assert factors.shape == (40, TINY.embedding_dim) and factors.dtype == np.float32
    items, scores = model.similar_items(0, k=3)
    normed = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    cosine = normed @ normed[0]
    cosine[0] = -np.inf
    assert items.tolist() == np.argsort(-cosine, kind="stable")[:3].tolist()


def test_cancelled_fit_leaves_no_half_trained_model(data):
    train, _, _ = data

    def cancel(event):
        raise KeyboardInterrupt

    model = MatrixFactorization(TINY, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        model.fit(train, on_epoch=cancel)
    with pytest.raises(NotFittedError):
        model.predict(np.array([0]), np.array([0]))


def test_unfitted_model_refuses_to_predict():
    model = MatrixFactorization(TINY)
    with pytest.raises(NotFittedError):
        model.predict(np.array([0]), np.array([0]))
    with pytest.raises(NotFittedError):
        model.fold_in({0: 4.0})


def test_out_of_range_indices_are_rejected(model):
    with pytest.raises(IndexError, match="user indices must be in 0..59"):
        model.predict(np.array([60]), np.array([0]))
    with pytest.raises(IndexError, match="item indices must be in 0..39"):
        model.predict(np.array([0]), np.array([40]))
    with pytest.raises(ValueError, match="has 5 values"):
        model.score_folded(np.zeros(3))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"embedding_dim": 0}, "embedding_dim must be an int >= 1"),
        ({"reg_factors": -1.0}, "reg_factors must be a finite number >= 0"),
        ({"fold_in_reg": float("inf")}, "fold_in_reg must be a finite number >= 0"),
        ({"init_std": 0.0}, "init_std must be a finite number > 0"),
        ({"use_sigmoid_range": "yes"}, "use_sigmoid_range must be True or False"),
        ({"optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": -1}, r"batch_size must be >= 0 \(0 = automatic\)"),
        ({"optimizer": "sparse_adam", "reg_uniform": 0.1}, "reg_uniform=0.1 touches every factor row"),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        replace(MFConfig(), **changes)


def _ml100k_fold(fold: str) -> tuple[Dataset, Dataset]:
    folder = require_release("ml-100k")
    try:
        from recengine.data.movielens import load_dataset
        from recengine.data.splits import make_split
    except ImportError:
        columns = ["user", "item", "rating", "timestamp"]
        everything = pd.read_csv(folder / "u.data", sep="\t", names=columns)
        user_map, item_map = IdMap(np.sort(everything.user.unique())), IdMap(np.sort(everything.item.unique()))

        def part(name: str) -> Dataset:
            frame = pd.read_csv(folder / f"{fold}.{name}", sep="\t", names=columns)
            return Dataset.from_arrays(
                "ml-100k", user_map.indices_of(frame.user.to_numpy()), item_map.indices_of(frame.item.to_numpy()),
                frame.rating.to_numpy(), frame.timestamp.to_numpy(), user_map=user_map, item_map=item_map, rating_scale=(1.0, 5.0),
            )

        return part("base"), part("test")
    split = make_split(load_dataset("ml-100k"), fold)
    return split.train, split.test


@pytest.mark.slow
def test_ml100k_u1_rmse_target():
    train, test = _ml100k_fold("u1")
    model = MatrixFactorization(device="cpu").fit(train)
    assert rmse(model.predict(test.users, test.items), test.ratings) <= 0.920

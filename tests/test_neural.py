"""The neural model (embeddings + MLP, NeuMF fusion): learning, the rating range, fold-in,
leave-one-out explanations, persistence, configuration."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from recengine.data.dataset import Dataset, IdMap
from recengine.models.base import Recommender, create_model, model_names
from recengine.models.neural import NeuralConfig, NeuralRecommender

from conftest import require_release

N_USERS, N_ITEMS, HELD_OUT = 60, 40, 8  # the last HELD_OUT users have no training ratings

#: Small, fast settings for the 60 x 40 low-rank matrix: (nearly) full-batch Adam.
TINY = NeuralConfig(
    embedding_dim=8, hidden=(16,), dropout=0.0, epochs=150, batch_size=1024, learning_rate=0.03,
    reg_embeddings=0.001, reg_uniform=0.0, init_std=0.1, range_margin=0.5, schedule="cosine",
    fold_in_reg=0.1, fold_in_steps=100, fold_in_learning_rate=0.1,
)


def low_rank(seed: int = 0) -> tuple[Dataset, Dataset, np.ndarray]:
    """A rank-3 (plus biases) rating matrix on the 1..5 scale; 60% of it observed for training,
    except the last HELD_OUT users, who have no training rating at all (brand-new users).

    Returns (train, test, full matrix (N_USERS, N_ITEMS) float64)."""
    rng = np.random.default_rng(seed)
    full = (
        3.0
        + rng.normal(0, 0.7, (N_USERS, 3)) @ rng.normal(0, 0.7, (N_ITEMS, 3)).T
        + rng.normal(0, 0.4, (N_USERS, 1))
        + rng.normal(0, 0.4, (1, N_ITEMS))
    )
    full = np.clip(full, 1.0, 5.0)
    observed = rng.random((N_USERS, N_ITEMS)) < 0.6
    observed[N_USERS - HELD_OUT :] = False
    user_map, item_map = IdMap(np.arange(N_USERS) + 100), IdMap(np.arange(N_ITEMS) + 1000)

    def part(mask: np.ndarray) -> Dataset:
        users, items = np.nonzero(mask)
        return Dataset.from_arrays(
            "lowrank", users, items, full[users, items], user_map=user_map, item_map=item_map, rating_scale=(1.0, 5.0)
        )

    test = ~observed
    test[N_USERS - HELD_OUT :] = False
    return part(observed), part(test), full


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


@pytest.fixture(scope="module")
def data():
    return low_rank()


@pytest.fixture(scope="module")
def model(data) -> NeuralRecommender:
    """NeuMF with implicit feedback and biases (the default structure)."""
    return NeuralRecommender(TINY, device="cpu").fit(data[0])


@pytest.fixture(scope="module")
def mlp_model(data) -> NeuralRecommender:
    return NeuralRecommender(replace(TINY, fusion="mlp", implicit_feedback=False), device="cpu").fit(data[0])


def test_registered_after_mf():
    assert model_names()[:2] == ["mf", "neural"]
    assert isinstance(create_model("neural", device="cpu", hidden="32,16"), NeuralRecommender)
    assert create_model("neural", hidden="32,16").config.hidden == (32, 16)


@pytest.mark.parametrize("fusion, implicit", [("neumf", True), ("neumf", False), ("mlp", False), ("mlp", True)])
def test_learns_a_low_rank_matrix_better_than_the_mean(data, model, mlp_model, fusion, implicit):
    train, test, full = data
    fitted = {("neumf", True): model, ("mlp", False): mlp_model}
    config = replace(TINY, fusion=fusion, implicit_feedback=implicit)
    model = fitted.get((fusion, implicit)) or NeuralRecommender(config, device="cpu").fit(train)
    assert model.config == config
    baseline = rmse(np.full(len(test), train.ratings.mean()), test.ratings)
    held_out = rmse(model.predict(test.users, test.items), test.ratings)
    assert baseline > 0.9
    assert held_out < 0.45 * baseline
    assert model.history[-1].loss < 0.5 * model.history[0].loss


def test_predictions_stay_on_the_rating_scale(model, data):
    train, _, _ = data
    users, items = np.meshgrid(np.arange(N_USERS), np.arange(N_ITEMS), indexing="ij")
    predicted = model.predict(users.ravel(), items.ravel())
    assert predicted.dtype == np.float32 and predicted.min() >= 1.0 and predicted.max() <= 5.0
    scores = model.score_users(np.arange(N_USERS))
    lo, hi = model.output_range
    assert (lo, hi) == (0.5, 5.5)
    assert scores.shape == (N_USERS, N_ITEMS) and scores.dtype == torch.float32
    assert float(scores.min()) > lo and float(scores.max()) < hi
    # score_users (every item, one grid) is the unclipped form of predict (pairs)
    np.testing.assert_allclose(np.clip(scores.numpy(), 1.0, 5.0).ravel(), predicted, atol=1e-5)


def test_extreme_weights_still_give_ratings_on_the_scale(data):
    train, _, _ = data
    model = NeuralRecommender(replace(TINY, epochs=1), device="cpu").fit(train)
    with torch.no_grad():
        for parameter in model.network.parameters():
            parameter.mul_(1e3)
    scores = model.score_users(np.arange(N_USERS)).numpy()
    assert np.isfinite(scores).all() and scores.min() >= 0.5 and scores.max() <= 5.5
    predicted = model.predict(np.arange(N_USERS), np.zeros(N_USERS, dtype=np.int64))
    assert predicted.min() >= 1.0 and predicted.max() <= 5.0


def test_same_seed_same_model_even_with_dropout(data):
    train, test, _ = data
    config = replace(TINY, epochs=5, dropout=0.3)
    first = NeuralRecommender(config, device="cpu").fit(train).predict(test.users, test.items)
    second = NeuralRecommender(config, device="cpu").fit(train).predict(test.users, test.items)
    third = NeuralRecommender(replace(config, seed=7), device="cpu").fit(train).predict(test.users, test.items)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, third)


def test_validation_figures_and_early_stopping(data):
    train, test, _ = data
    model = NeuralRecommender(replace(TINY, epochs=40, early_stopping_patience=2, learning_rate=0.1), device="cpu").fit(train, test)
    curve = [e.metrics["rmse"] for e in model.history]
    assert all("mae" in e.metrics for e in model.history)
    assert rmse(model.predict(test.users, test.items), test.ratings) == pytest.approx(min(curve), abs=1e-5)


# --- new users --------------------------------------------------------------------------------
def profile_of(user: int, full: np.ndarray, items: list[int]) -> dict[int, float]:
    return {item: float(full[user, item]) for item in items}


def test_fold_in_recovers_a_new_users_taste(model, data):
    _, _, full = data
    for user in range(N_USERS - 4, N_USERS):
        shown = list(range(0, N_ITEMS, 2))  # half the items revealed, judged on the other half
        scores = model.score_folded(model.fold_in(profile_of(user, full, shown))).numpy()
        hidden = np.arange(1, N_ITEMS, 2)
        assert np.corrcoef(scores[hidden], full[user, hidden])[0, 1] > 0.8
        assert rmse(np.clip(scores[hidden], 1, 5), full[user, hidden]) < 0.5


def test_fold_in_is_deterministic_and_shaped(model, data):
    _, _, full = data
    ratings = profile_of(N_USERS - 1, full, [3, 10, 17, 25, 31])
    first, second = model.fold_in(ratings), model.fold_in(dict(reversed(list(ratings.items()))))
    assert first.dtype == np.float32 and first.shape == (2 * TINY.embedding_dim + 1,)
    assert np.array_equal(first, second)


def test_fold_in_leaves_every_network_weight_unchanged(model, data):
    _, _, full = data
    before = {key: value.clone() for key, value in model.network.state_dict().items()}
    ratings = profile_of(N_USERS - 2, full, [1, 2, 3, 5, 8])
    model.fold_in(ratings)
    model.explain(ratings, 0)
    after = model.network.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert all(parameter.grad is None for parameter in model.network.parameters())


def test_fold_in_without_ratings_is_the_mean_trained_user(model):
    network = model.network
    users = torch.arange(N_USERS)
    expected = torch.cat(
        [network.user_embedding(users).mean(0), network.user_gmf(users).mean(0), network.user_bias(users).mean(0)]
    )
    np.testing.assert_array_equal(model.fold_in({}), expected.detach().numpy())
    assert model.explain({}, 0) == []


def test_the_pull_toward_the_prior_tames_a_single_rating(mlp_model, tmp_path):
    prior = mlp_model.fold_in({})
    loose = mlp_model.fold_in({0: 5.0})
    strict = Recommender.load(mlp_model.save(tmp_path / "neural"), device="cpu")
    strict.config = replace(mlp_model.config, fold_in_reg=100 * mlp_model.config.fold_in_reg)
    pulled = strict.fold_in({0: 5.0})
    assert 0 < np.linalg.norm(pulled - prior) < 0.5 * np.linalg.norm(loose - prior)
    # the single rating still moves its own item's prediction toward it
    assert float(strict.score_folded(pulled)[0]) > float(strict.score_folded(prior)[0])


def test_fold_in_of_a_trained_user_agrees_with_their_trained_scores(model, data):
    train, _, _ = data
    indptr, items, ratings = train.user_item_csr()
    for user in (0, 7, 33):
        span = slice(indptr[user], indptr[user + 1])
        folded = model.score_folded(model.fold_in(dict(zip(items[span].tolist(), ratings[span].tolist())))).numpy()
        trained = model.score_users(np.array([user]))[0].numpy()
        assert np.corrcoef(folded, trained)[0, 1] > 0.9


def test_user_vector_lives_with_the_item_factors(model, mlp_model, data):
    _, _, full = data
    ratings = profile_of(N_USERS - 1, full, [0, 4, 9])
    rep = model.fold_in(ratings)
    d = TINY.embedding_dim
    assert np.array_equal(model.user_vector(rep), rep[d : 2 * d])
    assert np.array_equal(model.item_factors(), model.network.item_gmf.weight.detach().numpy())
    # fusion "mlp": the user embedding is not in the item embeddings' space
    assert mlp_model.user_vector(mlp_model.fold_in(ratings)) is None
    assert np.array_equal(mlp_model.item_factors(), mlp_model.network.item_embedding.weight.detach().numpy())
    with pytest.raises(ValueError, match="has 17 values"):
        model.score_folded(np.zeros(3))


def test_explain_matches_brute_force_leave_one_out(model, data):
    _, _, full = data
    ratings = profile_of(N_USERS - 3, full, [2, 6, 11, 19, 23, 30, 38])
    full_scores = model.score_folded(model.fold_in(ratings)).numpy().astype(np.float64)
    without = {j: model.score_folded(model.fold_in({k: r for k, r in ratings.items() if k != j})).numpy() for j in ratings}
    for item in (0, 15, 39):
        explanation = model.explain(ratings, item)
        assert sorted(j for j, _ in explanation) == sorted(ratings)
        contributions = [c for _, c in explanation]
        assert contributions == sorted(contributions, reverse=True)
        for rated, contribution in explanation:
            assert contribution == pytest.approx(full_scores[item] - float(without[rated][item]), abs=2e-4)
    assert max(abs(c) for _, c in model.explain(ratings, 0)) > 0.01  # the ratings do move the score


def test_explain_a_single_rating_against_the_prior(mlp_model):
    [(item, contribution)] = mlp_model.explain({4: 5.0}, 9)
    with_it = float(mlp_model.score_folded(mlp_model.fold_in({4: 5.0}))[9])
    without = float(mlp_model.score_folded(mlp_model.fold_in({}))[9])
    assert item == 4 and contribution == pytest.approx(with_it - without, abs=1e-5)
    with pytest.raises(IndexError):
        mlp_model.explain({4: 5.0}, N_ITEMS)


def test_recommend_for_excludes_rated_items(model):
    ratings = {0: 5.0, 1: 5.0, 2: 1.0}
    items, scores = model.recommend_for(ratings, k=5)
    assert len(items) == 5 and not set(items.tolist()) & set(ratings)
    assert list(scores) == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, model.score_folded(model.fold_in(ratings)).numpy()[items])


def test_similar_items_by_cosine_of_item_factors(model):
    factors = model.item_factors().astype(np.float64)
    items, _ = model.similar_items(0, k=3)
    normed = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    cosine = normed @ normed[0]
    cosine[0] = -np.inf
    assert items.tolist() == np.argsort(-cosine, kind="stable")[:3].tolist()


# --- persistence ------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["model", "mlp_model"])
def test_save_load_round_trip_is_exact(which, request, data, tmp_path):
    model = request.getfixturevalue(which)
    _, test, full = data
    loaded = Recommender.load(model.save(tmp_path / "neural"), device="cpu")
    assert isinstance(loaded, NeuralRecommender) and loaded.config == model.config
    assert np.array_equal(loaded.predict(test.users, test.items), model.predict(test.users, test.items))
    assert torch.equal(loaded.score_users(np.arange(N_USERS)), model.score_users(np.arange(N_USERS)))
    ratings = profile_of(N_USERS - 1, full, [3, 10, 20])
    assert np.array_equal(loaded.fold_in(ratings), model.fold_in(ratings))
    assert loaded.explain(ratings, 5) == model.explain(ratings, 5)


# --- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"fusion": "gmf"}, r"fusion must be one of \('mlp', 'neumf'\), got 'gmf'"),
        ({"activation": "sigmoid"}, r"activation must be one of \('relu', 'gelu', 'silu', 'tanh'\)"),
        ({"hidden": ()}, "hidden must be a non-empty tuple of ints >= 1"),
        ({"hidden": (32, 0)}, "hidden must be a non-empty tuple of ints >= 1"),
        ({"hidden": [32]}, "hidden must be a non-empty tuple"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ({"embedding_dim": 0}, "embedding_dim must be an int >= 1"),
        ({"fold_in_steps": 0}, "fold_in_steps must be an int >= 1"),
        ({"fold_in_reg": -1.0}, "fold_in_reg must be a finite number >= 0"),
        ({"fold_in_learning_rate": 0.0}, "fold_in_learning_rate must be a finite number > 0"),
        ({"implicit_feedback": "yes"}, "implicit_feedback must be True or False"),
        ({"optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"optimizer": "sparse_adam", "reg_uniform": 0.1}, "reg_uniform=0.1 touches every embedding row"),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        replace(NeuralConfig(), **changes)


def test_sparse_adam_trains(data):
    train, test, _ = data
    config = replace(TINY, optimizer="sparse_adam", reg_uniform=0.0, epochs=60)
    model = NeuralRecommender(config, device="cpu").fit(train)
    baseline = rmse(np.full(len(test), train.ratings.mean()), test.ratings)
    assert rmse(model.predict(test.users, test.items), test.ratings) < 0.6 * baseline


# --- real data --------------------------------------------------------------------------------
@pytest.mark.slow
def test_ml100k_u1_rmse():
    """The default reaches RMSE 0.9122 on u1 (target 0.915, benchmarks/accuracy.py) but its
    implicit-feedback sums make it fit in 30-40 s on a busy 2-core machine, so this test fits
    the cheaper proxy beneath it (no implicit feedback: 0.9182 measured, about 3x faster) and
    holds it to MF's u1 target."""
    require_release("ml-100k")
    from recengine.data.movielens import load_dataset
    from recengine.data.splits import make_split

    split = make_split(load_dataset("ml-100k"), "u1")
    model = NeuralRecommender(replace(NeuralConfig(), implicit_feedback=False), device="cpu").fit(split.train)
    assert rmse(model.predict(split.test.users, split.test.items), split.test.ratings) <= 0.920

"""Which movies a newcomer is asked about, the rating helpers, and the onboarding benchmark's helpers."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from recengine.data.dataset import Dataset, IdMap
from recengine.onboarding import (
    GOOD_PROFILE_SIZE,
    RATING_CHOICES,
    next_batch,
    onboarding_order,
    popularity_floor,
    progress_message,
    validate_rating,
)


from fakes import FixedFactors  # noqa: E402  (tests/fakes.py)


def StaticFactors(factors) -> FixedFactors:  # noqa: N802  (reads like the class it builds)
    """Fixed item factors, a newcomer's vector the centred-rating-weighted mean of the rated
    items' factors, and an item's score 3 + v_i . u."""
    factors = np.asarray(factors, dtype=np.float32)
    return FixedFactors(factors, bias=np.full(len(factors), 3.0))


def rated_by_count(counts: list[int] | np.ndarray, n_users: int | None = None, rating: float = 4.0) -> Dataset:
    """A Dataset where item i is rated by users 0 .. counts[i]-1 (so its popularity is counts[i])."""
    counts = np.asarray(counts, dtype=np.int64)
    n_users = int(n_users if n_users is not None else max(1, counts.max()))
    users = np.concatenate([np.arange(c) for c in counts]) if counts.sum() else np.zeros(0, dtype=np.int64)
    items = np.repeat(np.arange(len(counts)), counts)
    return Dataset.from_arrays(
        "counts",
        users,
        items,
        np.full(len(users), rating),
        user_map=IdMap(np.arange(n_users)),
        item_map=IdMap(np.arange(len(counts))),
    )


def brute_force_order(factors: np.ndarray, weights: np.ndarray, prior_weight: float = 1.0) -> list[int]:
    """The greedy design recomputed from scratch at every step with an explicit inverse."""
    lam = prior_weight * np.mean(np.sum(factors**2, axis=1))
    precision = lam * np.eye(factors.shape[1])
    left = list(range(len(factors)))
    order = []
    for _ in range(len(factors)):
        inverse = np.linalg.inv(precision)
        gains = [weights[i] * math.log1p(factors[i] @ inverse @ factors[i]) for i in left]
        chosen = left[int(np.argmax(gains))]
        order.append(chosen)
        left.remove(chosen)
        precision = precision + weights[chosen] * np.outer(factors[chosen], factors[chosen])
    return order


# --- the order ----------------------------------------------------------------------------------
def test_order_matches_brute_force_greedy_design() -> None:
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(30, 4))
    counts = rng.integers(1, 40, size=30)
    train = rated_by_count(counts, n_users=40)
    order = onboarding_order(StaticFactors(factors), train, min_popularity=1)
    weights = counts / counts.max()  # users 0 .. max(counts)-1 have rated something
    expected = brute_force_order(factors.astype(np.float32).astype(np.float64), weights)
    assert order.tolist() == expected
    assert order.dtype == np.int64


def test_second_question_avoids_the_direction_already_asked() -> None:
    # Items 0 and 1 point the same way and are the most popular; item 2 is orthogonal and less popular.
    factors = np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [0.02, 0.02]])
    train = rated_by_count([50, 48, 30, 49], n_users=50)
    order = onboarding_order(StaticFactors(factors), train, min_popularity=1)
    # lam = mean |v|^2 ~ 0.745. Step 1: 1.0 * log(1 + 1/0.745) beats 0.96 * log(1 + 0.983/0.745).
    # Step 2: item 1 now adds almost nothing along axis 0; item 2 (0.6 * log(1 + 1/0.745)) wins.
    assert order.tolist()[:3] == [0, 2, 1]


def test_order_is_deterministic_and_seed_only_breaks_ties() -> None:
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(60, 5))
    train = rated_by_count(rng.integers(1, 30, size=60), n_users=30)
    model = StaticFactors(factors)
    first = onboarding_order(model, train, min_popularity=1)
    assert np.array_equal(first, onboarding_order(model, train, min_popularity=1))
    assert np.array_equal(first, onboarding_order(model, train, min_popularity=1, seed=123))  # no exact ties here
    # Identical items tie exactly: the seed decides which comes first, deterministically.
    twins = StaticFactors(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    tied = rated_by_count([10, 10, 5], n_users=10)
    orders = {tuple(onboarding_order(twins, tied, min_popularity=1, seed=s).tolist()) for s in range(20)}
    assert orders == {(0, 1, 2), (1, 0, 2)}
    assert onboarding_order(twins, tied, min_popularity=1, seed=4).tolist() == onboarding_order(twins, tied, min_popularity=1, seed=4).tolist()


def test_popularity_floor_is_respected_and_complete() -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 25, size=80)
    train = rated_by_count(counts, n_users=25)
    order = onboarding_order(StaticFactors(rng.normal(size=(80, 3))), train, min_popularity=12)
    assert sorted(order.tolist()) == np.flatnonzero(counts >= 12).tolist()
    assert len(set(order.tolist())) == len(order)


def test_default_floor_keeps_the_400_most_rated_with_ties() -> None:
    assert popularity_floor(np.array([5, 3, 3, 1]), pool_size=2) == 3
    assert popularity_floor(np.array([5, 3, 3, 1]), pool_size=10) == 1
    assert popularity_floor(np.array([0, 0, 0]), pool_size=2) == 1
    counts = np.arange(600) // 2  # 0,0,1,1,...,299,299: the 400th most rated has 100 ratings
    train = rated_by_count(counts, n_users=300)
    order = onboarding_order(StaticFactors(np.random.default_rng(2).normal(size=(600, 4))), train)
    assert sorted(order.tolist()) == np.flatnonzero(counts >= 100).tolist()
    assert len(order) == 400


def test_first_questions_spread_over_the_latent_space_more_than_the_most_popular() -> None:
    # 12 very popular items all along axis 0 (slightly perturbed), 24 less popular ones spread
    # over the other axes: asking only the blockbusters tells nothing about axes 1..5.
    rng = np.random.default_rng(5)
    blockbusters = np.column_stack([np.ones(12), 0.05 * rng.normal(size=(12, 5))])
    others = np.column_stack([0.05 * rng.normal(size=24), rng.normal(size=(24, 5))])
    others /= np.linalg.norm(others, axis=1, keepdims=True)
    factors = np.vstack([blockbusters, others])
    counts = np.concatenate([np.arange(100, 88, -1), np.arange(60, 36, -1)])
    train = rated_by_count(counts, n_users=100)
    order = onboarding_order(StaticFactors(factors), train, min_popularity=1)
    most_popular = np.argsort(-counts, kind="stable")[:10]

    def spread(items: np.ndarray) -> tuple[int, float]:
        chosen = factors[items]
        singular = np.linalg.svd(chosen, compute_uv=False)
        rank = int(np.sum(singular > 0.1 * singular[0]))
        log_volume = float(np.linalg.slogdet(np.eye(chosen.shape[1]) + chosen.T @ chosen)[1])
        return rank, log_volume

    rank_order, volume_order = spread(order[:10])
    rank_popular, volume_popular = spread(most_popular)
    assert rank_popular == 1 and rank_order == 6
    assert volume_order > 2 * volume_popular  # log det(I + F^T F): about 5.6 against 2.5
    assert order[0] in most_popular  # it still starts with a movie nearly everyone knows


def test_order_rejects_bad_arguments() -> None:
    model = StaticFactors(np.eye(3))
    train = rated_by_count([3, 2, 1])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="min_popularity"):
            onboarding_order(model, train, min_popularity=bad)
    with pytest.raises(ValueError, match="lower min_popularity"):
        onboarding_order(model, train, min_popularity=10)
    with pytest.raises(ValueError, match="train has 4 items"):
        onboarding_order(model, rated_by_count([3, 2, 1, 1]))


# --- batches --------------------------------------------------------------------------------
def test_next_batch_skips_answered_and_skipped_in_order() -> None:
    order = np.array([5, 3, 9, 1, 7, 2, 8])
    assert next_batch(order, answered={3}, skipped=[1], size=3) == [5, 9, 7]
    assert next_batch(order, answered=[], skipped=[], size=2) == [5, 3]
    assert next_batch(order, answered=[5, 3, 9], skipped=[1, 7, 2], size=6) == [8]
    assert next_batch(order, answered=order.tolist(), skipped=[]) == []
    assert next_batch([np.int64(4), 6], answered=[np.int32(4)], skipped=()) == [6]
    assert all(type(item) is int for item in next_batch(order, (), ()))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="size"):
            next_batch(order, (), (), size=bad)


# --- ratings and progress -----------------------------------------------------------------------
def test_rating_choices_are_the_ten_half_stars() -> None:
    assert RATING_CHOICES == (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)


@pytest.mark.parametrize("value", [0.5, 1, 3.5, 5, np.float32(2.5), np.int64(4), 4.0])
def test_validate_rating_accepts_half_stars(value) -> None:
    assert validate_rating(value) == float(value)
    assert type(validate_rating(value)) is float


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), -1, 0, 0.0, 0.25, 5.5, 7, 3.3, 4.75, "4", "four", None, True, [4], 1e308],
)
def test_validate_rating_rejects_hostile_values(value) -> None:
    with pytest.raises(ValueError, match="rating"):
        validate_rating(value)


def test_progress_message() -> None:
    assert progress_message(7) == "7 rated; recommendations get good around 10"
    assert progress_message(0) == "0 rated; recommendations get good around 10"
    assert progress_message(GOOD_PROFILE_SIZE).startswith("10 rated; enough for good recommendations")
    assert progress_message(25).startswith("25 rated; enough")
    for bad in (-1, 2.5, "3", None):
        with pytest.raises(ValueError, match="n_rated"):
            progress_message(bad)


# --- the benchmark's helpers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "onboarding.py"
    spec = importlib.util.spec_from_file_location("onboarding_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def newcomers() -> Dataset:
    """Three users: 0 rated items 1, 4, 6; 1 rated items 0, 2, 3, 5; 2 rated nothing."""
    users = np.array([0, 0, 0, 1, 1, 1, 1])
    items = np.array([6, 1, 4, 5, 0, 3, 2])
    ratings = np.array([5.0, 2.0, 4.0, 1.0, 3.0, 4.5, 2.5])
    return Dataset.from_arrays("newcomers", users, items, ratings, user_map=IdMap(np.arange(3)), item_map=IdMap(np.arange(8)))


def test_reveal_by_order_keeps_the_first_k_the_user_has_seen(bench) -> None:
    user_items = np.array([1, 4, 6, 9])
    order = np.array([7, 6, 2, 1, 9, 4])
    assert bench.reveal_by_order(order, user_items, 2).tolist() == [2, 0]  # items 6 then 1
    assert bench.reveal_by_order(order, user_items, 10).tolist() == [2, 0, 3, 1]
    assert bench.reveal_by_order(order, user_items, 0).tolist() == []
    assert bench.reveal_by_order(np.array([3, 5]), user_items, 3).tolist() == []


def test_movies_shown_counts_the_skipped_ones(bench) -> None:
    order = np.array([7, 6, 2, 1, 9, 4])
    user_items = np.array([1, 4, 6, 9])
    assert [bench.movies_shown(order, user_items, k) for k in range(6)] == [0, 2, 4, 5, 6, 6]


def test_reveal_random_draws_distinct_positions_reproducibly(bench) -> None:
    picks = bench.reveal_random(np.arange(10, 20), 4, np.random.default_rng(1))
    assert len(set(picks.tolist())) == 4 and picks.min() >= 0 and picks.max() < 10
    assert picks.tolist() == bench.reveal_random(np.arange(10, 20), 4, np.random.default_rng(1)).tolist()
    assert sorted(bench.reveal_random(np.arange(3), 5, np.random.default_rng(0)).tolist()) == [0, 1, 2]


def test_split_newcomers_partitions_each_users_ratings(bench) -> None:
    data = newcomers()
    order = np.array([4, 0, 5, 7, 6, 3])
    revealed, remaining = bench.split_newcomers(data, lambda items, ratings: bench.reveal_by_order(order, items, 2))
    assert bench.profiles(revealed) == {0: {4: 4.0, 6: 5.0}, 1: {0: 3.0, 5: 1.0}}
    assert bench.profiles(remaining) == {0: {1: 2.0}, 1: {2: 2.5, 3: 4.5}}
    assert len(revealed) + len(remaining) == len(data)
    assert revealed.item_map is data.item_map and remaining.catalogue is data.catalogue


def test_folded_rmse_and_scores_match_a_hand_computation(bench) -> None:
    data = newcomers()
    factors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0], [0.0, 0.5], [1.0, -1.0], [2.0, 0.0], [0.0, 0.0]])
    model = StaticFactors(factors)
    known = {0: {6: 5.0}, 1: {0: 3.0, 5: 1.0}}
    remaining = data.subset(np.array([False, True, True, False, False, True, True]), "remaining")  # (0,1) (0,4) (1,3) (1,2)
    # user 0: u = (5-3) * [2, 0] = [4, 0] -> item 1: 3 + 0 = 3, item 4: 3 + 0 = 3
    # user 1: u = ((3-3)[1,0] + (1-3)[1,-1]) / 2 = [-1, 1] -> item 3: 3 - 0.5 = 2.5, item 2: 3 + 0 = 3
    errors = np.array([2.0 - 3.0, 4.0 - 3.0, 4.5 - 2.5, 2.5 - 3.0])
    assert bench.folded_rmse(model, known, remaining) == pytest.approx(float(np.sqrt(np.mean(errors**2))))
    scores = bench.folded_scores(model, known)(np.array([1, 2]))
    np.testing.assert_allclose(scores.numpy(), [3.0 + factors @ np.array([-1.0, 1.0]), np.full(8, 3.0)], rtol=1e-6)
    constant = bench.constant_scores(np.arange(8))(np.array([0, 1, 2]))
    assert constant.shape == (3, 8) and constant[2, 7] == 7


def test_product_scores_rank_as_the_recommendations_page_does(bench) -> None:
    from recengine.data.synthetic import generate_synthetic
    from recengine.recommend import RecommendationFilter, recommend_profile

    data = generate_synthetic(n_users=60, n_items=40, n_interactions=1500, n_factors=3, seed=5)
    model = StaticFactors(np.random.default_rng(2).normal(size=(40, 3)))
    counts = data.item_popularity()
    floor = int(np.median(counts))
    catalogue = data.catalogue.assign(popularity=counts)
    known = {0: {1: 5.0, 7: 2.0, 30: 4.0}, 3: {2: 1.0}}
    users = np.array([0, 3, 9])  # user 9 revealed nothing
    for novelty in (-0.6, 0.0, 0.4):
        values = bench.product_scores(model, known, counts, counts >= floor, novelty)(users).numpy()
        for row, user in enumerate(users.tolist()):
            page = recommend_profile(
                model, catalogue, known.get(user, {}), k=10, filters=RecommendationFilter(min_ratings=floor), novelty=novelty, explain=False
            )
            best = np.argsort(-values[row], kind="stable")[:10]
            assert best.tolist() == [rec.item_idx for rec in page]
            # revealed items and items under the floor are never candidates
            assert np.all(values[row, list(known.get(user, {}))] == -np.inf)
            assert np.all(values[row, counts < floor] == -np.inf)


def test_evaluate_newcomers_on_synthetic_data(bench) -> None:
    from recengine.data.synthetic import generate_synthetic
    from recengine.evaluation import ranking_metrics

    data = generate_synthetic(n_users=120, n_items=80, n_interactions=4000, n_factors=4, seed=3)
    heldout_users = np.arange(100, 120)
    mask = np.isin(data.users, heldout_users)
    train, heldout = data.subset(~mask, "train"), data.subset(mask, "heldout")
    rng = np.random.default_rng(0)
    model = StaticFactors(rng.normal(size=(80, 4)) * 0.3)
    order = onboarding_order(model, train, min_popularity=1)
    results = bench.evaluate_newcomers(model, train, heldout, order, ks=(0, 5), seed=1)
    zero, five = results
    # Nothing revealed: the onboarding and the random reveal are the same, and popularity is
    # exactly the metric of ranking every held-out rating by training popularity.
    assert zero.ndcg == zero.random and zero.revealed == 0.0
    empty = heldout.subset(np.zeros(len(heldout), dtype=bool), "none")
    popularity = bench.constant_scores(train.item_popularity().astype(np.float32))
    assert zero.popularity == pytest.approx(ranking_metrics(popularity, empty, heldout, metrics=["ndcg"])["ndcg@10"])
    per_user = np.bincount(heldout.users - 100)
    assert zero.shown == 0.0
    assert five.shown == pytest.approx(np.mean([bench.movies_shown(order, heldout.items_of(u), 5) for u in heldout_users]))
    assert five.revealed <= 5 <= five.shown
    assert five.revealed == pytest.approx(np.mean([min(5, np.isin(order, heldout.items_of(u)).sum()) for u in heldout_users]))
    assert per_user.min() > 5
    for result in results:
        for value in (result.ndcg, result.popularity, result.random, result.ndcg_common, result.random_common):
            assert 0.0 <= value <= 1.0
        assert result.rmse > 0
    assert five.line().startswith("k=5 ndcg@10=")

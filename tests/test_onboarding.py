"""Which movies a newcomer is asked about, the rating helpers, and the onboarding benchmark's helpers."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from recengine.data.dataset import Dataset, IdMap
from recengine.onboarding import (
    BATCH_SIZE,
    GOOD_PROFILE_SIZE,
    RATING_CHOICES,
    QuestionConfig,
    Questioner,
    next_batch,
    next_questions,
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
    revealed, remaining = bench.split_newcomers(data, lambda items, ratings, user: bench.reveal_by_order(order, items, 2))
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


def test_newcomers_rank_as_the_page_does_with_co_watch(bench) -> None:
    import torch

    from recengine.data.synthetic import generate_synthetic
    from recengine.recommend import CoWatch

    data = generate_synthetic(n_users=120, n_items=80, n_interactions=4000, n_factors=4, seed=3)
    mask = data.users >= 100
    train, heldout = data.subset(~mask, "train"), data.subset(mask, "heldout")
    model = StaticFactors(np.random.default_rng(0).normal(size=(80, 4)) * 0.3)
    indptr, items, _ = train.user_item_csr()  # what fit() leaves on a model: the training pattern
    model._seen_indptr, model._seen_items = torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(items.astype(np.int64))
    counts = train.item_popularity()
    floor = int(np.median(counts))
    order = onboarding_order(model, train, min_popularity=1)
    newcomers = bench.Newcomers(model, train, heldout, order, ks=(0, 5), seed=1, min_ratings=floor)
    co_watch = CoWatch.of_model(model)
    users = np.arange(100, 120)
    weights = bench.Weights(co_watch=0.8, seen=1.5, novelty=-0.3)
    # the onboarding reveal passes over movies the user has not rated; a random reveal skips none
    assert newcomers.onboarding[5].not_seen.any() and not newcomers.random[5].not_seen.any()
    for user in users.tolist():
        row = newcomers.row_of[user]
        skipped = bench.skipped_along(order, heldout.items_of(user), 5)
        assert np.flatnonzero(newcomers.onboarding[5].not_seen[row]).tolist() == sorted(skipped.tolist())
    for reveal, hide in itertools.product((newcomers.onboarding[5], newcomers.random[5]), (True, False)):
        fast = newcomers.ranking(reveal, co_watch, dataclasses.replace(weights, hide_not_seen=hide))(users).numpy()
        page = bench.product_scores(
            model, reveal.known, counts, counts >= floor, -0.3, co_watch=0.8, not_seen=reveal.not_seen_of(newcomers.row_of), seen=1.5,
            hide_not_seen=hide,
        )(users).numpy()
        assert np.array_equal(np.isinf(fast), np.isinf(page))
        np.testing.assert_allclose(fast[np.isfinite(fast)], page[np.isfinite(page)], atol=1e-5)
        # hidden: every movie passed over is out of the ranking; shown: they are ranked like the rest
        passed = reveal.not_seen[newcomers.row_of[users]]
        assert np.isinf(fast[passed]).all() if hide else np.isfinite(fast[passed & (counts >= floor)]).all()
        if not hide:
            continue
        # co-watch and the seen term each change the ranking
        for other in (bench.Weights(co_watch=0.0, seen=1.5, novelty=-0.3), bench.Weights(co_watch=0.8, seen=0.0, novelty=-0.3)):
            plain = newcomers.ranking(reveal, co_watch, other)(users).numpy()
            assert not np.allclose(fast[np.isfinite(fast)], plain[np.isfinite(plain)])
    results = newcomers.results(co_watch, weights)
    again = bench.evaluate_newcomers(model, train, heldout, order, ks=(0, 5), seed=1, weights=weights, min_ratings=floor)
    assert [r.ndcg for r in results] == [r.ndcg for r in again]
    assert [r.random_common for r in results] == [r.random_common for r in again]
    zero, five = results
    assert zero.popularity_random == zero.popularity  # nothing revealed: the same targets
    from recengine.evaluation import ranking_metrics

    popularity = bench.constant_scores(counts.astype(np.float32))
    random_revealed = newcomers.random[5]
    expected = ranking_metrics(popularity, random_revealed.revealed, random_revealed.remaining, metrics=["ndcg"])["ndcg@10"]
    assert five.popularity_random == pytest.approx(expected)
    skipped = newcomers.results(co_watch, weights, common=False)
    assert [r.ndcg for r in skipped] == [r.ndcg for r in results] and math.isnan(skipped[1].ndcg_common)


def test_result_lines_keep_the_issue_format(bench) -> None:
    result = bench.NewcomerResult(
        k=10, ndcg=0.33571, popularity=0.22034, random=0.64031, rmse=0.96771, revealed=10.0, shown=40.5,
        ndcg_common=0.31049, random_common=0.42381, popularity_random=0.47642,
    )
    assert result.line() == "k=10 ndcg@10=0.3357 popularity=0.2203 random=0.6403 rmse=0.9677"
    assert result.same_targets_line() == (
        "same-targets k=10 onboarding=0.3105 random=0.4238 popularity_onboarding_targets=0.2203 popularity_random_targets=0.4764"
    )
    implicit = bench.NewcomerResult(10, 0.3, 0.2, 0.4, float("nan"), 10.0, 40.0, 0.3, 0.3, 0.5)
    assert implicit.line().endswith("rmse=n/a")


# --- adaptive questions ---------------------------------------------------------------------------
def block_interactions() -> tuple[np.ndarray, np.ndarray]:
    """A users x items CSR pattern (indptr, items) over 14 items: users 0-19 watch block A
    (items 0-5), users 20-39 block B (items 6-11), each all of their block but one (item u % 6 of
    it); everyone watches items 12 and 13."""
    users, items = [], []
    for user in range(40):
        block = range(0, 6) if user < 20 else range(6, 12)
        chosen = [item for item in block if item % 6 != user % 6] + [12, 13]
        users += [user] * len(chosen)
        items += chosen
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=40))])
    return indptr, np.array(items)


BLOCK_A, BLOCK_B = set(range(6)), set(range(6, 12))
ASK_ANY = QuestionConfig(lift=0.5, design=0.0, reach=0.0, min_popularity=1)


def brute_force_seen(
    indptr: np.ndarray, items: np.ndarray, n_items: int, rated: list[int], skipped: list[int], ridge: float = 0.1
) -> np.ndarray:
    """The linear conditional expectation of "has seen" from a dense matrix, written out plainly."""
    seen = np.zeros((len(indptr) - 1, n_items))
    for user in range(len(indptr) - 1):
        seen[user, items[indptr[user] : indptr[user + 1]]] = 1.0
    prior = seen.mean(axis=0)
    covariance = (seen - prior).T @ (seen - prior) / len(seen)
    answered = rated + skipped
    block = covariance[np.ix_(answered, answered)] + ridge * np.mean(np.diag(covariance)) * np.eye(len(answered))
    observed = np.array([1.0] * len(rated) + [0.0] * len(skipped))
    expected = prior + covariance[:, answered] @ np.linalg.solve(block, observed - prior[answered])
    expected = np.clip(expected, 1e-3, 1.0)
    expected[skipped], expected[rated] = 1e-3, 1.0
    return expected


def test_seen_probability_is_the_conditional_expectation_of_having_seen() -> None:
    indptr, items = block_interactions()
    questioner = Questioner.from_interactions(indptr, items, 14)
    # 20 users per block, each missing item u % 6 of it: items 0, 1 (users 0, 6, 12, 18 and 1, 7, 13, 19)
    # and 8, 9 (users 20, 26, 32, 38 and 21, 27, 33, 39) are missed by 4 users, the others by 3
    np.testing.assert_allclose(questioner.prior, np.array([16, 16, 17, 17, 17, 17, 17, 17, 16, 16, 17, 17, 40, 40]) / 40)
    np.testing.assert_allclose(questioner.seen_probability((), ()), questioner.prior)
    for rated, skipped in (([0], []), ([], [0, 1]), ([2, 7], [3]), ([0, 1, 2], [6, 8])):
        np.testing.assert_allclose(
            questioner.seen_probability(rated, skipped), brute_force_seen(indptr, items, 14, rated, skipped), rtol=1e-5, atol=1e-6
        )
    after_a = questioner.seen_probability([0], [])
    assert after_a[[1, 2, 3, 4, 5]].min() > 0.7 > 0.05 > after_a[list(BLOCK_B)].max()  # one answer moves it a lot
    after_skip = questioner.seen_probability([], [0, 1])
    assert after_skip[list(BLOCK_B)].min() > questioner.prior[6:12].max() and after_skip[2:6].max() < questioner.prior[2:6].min()


def test_seen_log_probability_leaves_each_skip_out_of_its_own_estimate() -> None:
    indptr, items = block_interactions()
    questioner = Questioner.from_interactions(indptr, items, 14)
    for rated, skipped in (([0], [6, 7]), ([2, 7], [3]), ([0, 1, 2], [6, 8, 4]), ([], [5])):
        for ridge in (0.1, 3.0):
            got = questioner.seen_log_probability(rated, skipped, ridge=ridge)
            expected = np.log(brute_force_seen(indptr, items, 14, rated, skipped, ridge))
            expected[rated] = 0.0
            for item in skipped:  # refit without that one answer: its estimate from the others
                others = [other for other in skipped if other != item]
                expected[item] = np.log(brute_force_seen(indptr, items, 14, rated, others, ridge)[item])
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the ridge of seen_probability is in the same units
    np.testing.assert_allclose(
        questioner.seen_probability([2, 7], [3], ridge=3.0), brute_force_seen(indptr, items, 14, [2, 7], [3], 3.0), rtol=1e-5, atol=1e-6
    )
    # skipping A movies lowers the rest of A, not the skipped movie's own estimate below its block's
    after = questioner.seen_log_probability([], [0, 1])
    assert after[2:6].max() < np.log(questioner.prior[2:6]).min() and after[0] > after[2:6].min()
    # a rated movie that is also listed as skipped counts as rated
    assert questioner.seen_log_probability([3], [3, 6])[3] == 0.0


def test_seen_log_probability_outside_the_pool_keeps_the_prior() -> None:
    indptr, items = block_interactions()
    # a pool of the 12 most-rated: 12, 13, the 17-rating items, then 0 and 1 of the 16-rating ones
    questioner = Questioner.from_interactions(indptr, items, 14, max_items=12)
    assert sorted(set(range(14)) - set(questioner.pool.tolist())) == [8, 9]
    got = questioner.seen_log_probability([0], [8, 6])
    assert got[8] == pytest.approx(np.log(questioner.prior[8])) and got[9] == pytest.approx(np.log(questioner.prior[9]))
    np.testing.assert_allclose(got[questioner.pool], questioner.seen_log_probability([0], [6])[questioner.pool])


def test_next_questions_follow_the_block_the_answers_point_to() -> None:
    indptr, items = block_interactions()
    questioner = Questioner.from_interactions(indptr, items, 14)
    assert set(questioner.next_questions({0}, (), 4, config=ASK_ANY).tolist()) <= BLOCK_A - {0}
    assert set(questioner.next_questions({7}, (), 4, config=ASK_ANY).tolist()) <= BLOCK_B - {7}
    # "haven't seen" two movies of A: the next ones come from B
    assert set(questioner.next_questions((), {0, 1}, 4, config=ASK_ANY).tolist()) <= BLOCK_B
    # lift 0 asks what the person has most surely seen: the movies everybody watched
    assert questioner.next_questions({0}, (), 2, config=QuestionConfig(lift=0.0, reach=0.0, min_popularity=1)).tolist() == [12, 13]


def test_next_questions_never_repeat_and_run_out_cleanly() -> None:
    indptr, items = block_interactions()
    questioner = Questioner.from_interactions(indptr, items, 14)
    rated, skipped, exclude = {0: 4.0, 3: 2.0}, {6, 12}, {1, 13}
    batch = questioner.next_questions(rated, skipped, 20, exclude, config=ASK_ANY)
    assert batch.dtype == np.int64
    assert sorted(batch.tolist()) == sorted(set(range(14)) - set(rated) - skipped - exclude)
    assert np.array_equal(batch, questioner.next_questions(rated, skipped, 20, exclude, config=ASK_ANY))  # deterministic
    assert questioner.next_questions(set(range(14)), (), 6, config=ASK_ANY).tolist() == []
    # the popularity floor: items 0, 1, 8, 9 (16 ratings) are never asked with min_popularity 17
    floor = QuestionConfig(lift=0.5, min_popularity=17)
    assert sorted(questioner.next_questions((), {2}, 14, config=floor).tolist()) == [3, 4, 5, 6, 7, 10, 11, 12, 13]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            questioner.next_questions((), (), bad)
    with pytest.raises(ValueError, match=r"rated must hold item indices in 0\.\.13, got 14"):
        questioner.next_questions({14: 3.0}, (), 3)


def test_design_term_matches_a_brute_force_greedy_batch() -> None:
    indptr, items = block_interactions()
    factors = np.random.default_rng(4).normal(size=(14, 3))
    questioner = Questioner.from_interactions(indptr, items, 14, factors=factors)
    config = QuestionConfig(lift=0.75, design=2.0, reach=0.0, min_popularity=1)
    rated, skipped = [2, 8], [9]
    seen = questioner.seen_probability(rated, skipped)
    value = np.log(seen) - 0.75 * np.log(questioner.prior)
    precision = np.mean(np.sum(factors**2, axis=1)) * np.eye(3) + factors[rated].T @ factors[rated]
    left = [item for item in range(14) if item not in rated + skipped]
    expected = []
    for _ in range(5):
        inverse = np.linalg.inv(precision)
        gains = [value[i] + 2.0 * math.log1p(factors[i] @ inverse @ factors[i]) for i in left]
        chosen = left[int(np.argmax(gains))]
        expected.append(chosen)
        left.remove(chosen)
        precision = precision + seen[chosen] * np.outer(factors[chosen], factors[chosen])
    assert questioner.next_questions(rated, skipped, 5, config=config).tolist() == expected
    # without the design term the batch is the top of `value` alone
    plain = questioner.next_questions(rated, skipped, 5, config=QuestionConfig(lift=0.75, design=0.0, reach=0.0, min_popularity=1))
    assert plain.tolist() == [i for i in np.argsort(-value, kind="stable").tolist() if i not in rated + skipped][:5]


def brute_force_reach(covariance: np.ndarray, answered: list[int], candidates: list[int]) -> np.ndarray:
    """log(variance an answer removes / its mean) over `candidates`, conditioning from scratch."""
    ridge = 0.1 * np.mean(np.diag(covariance))
    posterior = covariance.copy()
    if answered:
        block = covariance[np.ix_(answered, answered)] + ridge * np.eye(len(answered))
        posterior = covariance - covariance[:, answered] @ np.linalg.inv(block) @ covariance[answered, :]
    posterior = posterior[np.ix_(candidates, candidates)]
    removed = np.maximum((posterior**2).sum(axis=0) / (np.diag(posterior) + ridge), 1e-12)  # 0 for a movie all saw
    return np.log(removed / removed.mean())


def test_reach_is_the_variance_an_answer_removes() -> None:
    from recengine.onboarding import _Reach

    indptr, items = block_interactions()
    questioner = Questioner.from_interactions(indptr, items, 14)
    at = questioner.position[np.arange(14)]  # item -> row of the covariance (the pool is every item)
    dense = questioner.covariance.astype(np.float64)[np.ix_(at, at)]
    answered, candidates = [2, 8], [0, 1, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13]
    reach = _Reach(questioner, np.array(answered), np.array(candidates))
    np.testing.assert_allclose(reach.log_gain(), brute_force_reach(dense, answered, candidates), atol=1e-4)  # S is float32
    # picking a movie for the batch conditions on it as if answered
    reach.answer(candidates.index(6))
    np.testing.assert_allclose(reach.log_gain(), brute_force_reach(dense, answered + [6], candidates), atol=1e-4)
    # the everyone-watched movies 12, 13 tell nothing (no variance); a block movie tells about its block
    fresh = _Reach(questioner, np.zeros(0, dtype=np.int64), np.arange(14)).log_gain()
    assert fresh[12] < -5 and fresh[13] < -5 and fresh[:12].min() > 0


def test_next_questions_with_reach_match_a_brute_force_greedy_batch() -> None:
    from recengine.data.synthetic import generate_synthetic

    data = generate_synthetic(n_users=200, n_items=30, n_interactions=2500, n_factors=3, seed=8)
    indptr, items, _ = data.user_item_csr()
    questioner = Questioner.from_interactions(indptr, items, 30)
    at = questioner.position[np.arange(30)]
    dense = questioner.covariance.astype(np.float64)[np.ix_(at, at)]
    config = QuestionConfig(lift=0.5, design=0.0, reach=1.5, min_popularity=1)
    rated, skipped = [3, 17], [5]
    value = np.log(questioner.seen_probability(rated, skipped)) - 0.5 * np.log(questioner.prior)
    candidates = [i for i in range(30) if i not in rated + skipped]
    expected: list[int] = []
    for _ in range(5):
        total = value[candidates] + 1.5 * brute_force_reach(dense, rated + skipped + expected, candidates)
        order = [candidates[i] for i in np.argsort(-total, kind="stable")]
        expected.append(next(item for item in order if item not in expected))
    assert questioner.next_questions(rated, skipped, 5, config=config).tolist() == expected
    # reach 0 is the value alone
    plain = questioner.next_questions(rated, skipped, 5, config=QuestionConfig(lift=0.5, design=0.0, reach=0.0, min_popularity=1))
    assert plain.tolist() == [i for i in np.argsort(-value, kind="stable").tolist() if i in candidates][:5]


def test_question_config_validation() -> None:
    for name in ("lift", "design", "evidence", "reach"):
        for bad in (-0.1, float("nan"), float("inf"), True, "1"):
            with pytest.raises(ValueError, match=name):
                QuestionConfig(**{name: bad})
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="min_popularity"):
            QuestionConfig(min_popularity=bad)
    assert QuestionConfig(lift=0.0, design=0.0, evidence=0.0).evidence == 0.0


def test_next_questions_for_a_model_start_with_the_fixed_order_then_adapt() -> None:
    import torch

    indptr, items = block_interactions()
    model = StaticFactors(np.random.default_rng(0).normal(size=(14, 3)))
    first = np.array([12, 0, 6, 13, 1, 7, 2, 8])
    # no training interactions: walk the fixed order, and say how to fix a missing one
    assert next_questions(model, {}, set(), 3, first=first).tolist() == [12, 0, 6]
    assert next_questions(model, {0: 4.0}, {12}, 3, {6}, first=first).tolist() == [13, 1, 7]
    with pytest.raises(ValueError, match="first=onboarding_order"):
        next_questions(model, {0: 4.0}, set(), 3)
    model._seen_indptr, model._seen_items = torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(items.astype(np.int64))
    questioner = Questioner.of_model(model)
    assert questioner is Questioner.of_model(model)  # built once per model
    assert next_questions(model, {}, set(), BATCH_SIZE, {12}, first=first).tolist() == [0, 6, 13, 1, 7, 2]  # first batch
    adapted = next_questions(model, {0: 4.0}, {12, 6, 13}, 4, first=first, config=ASK_ANY)
    assert set(adapted.tolist()) <= BLOCK_A and np.array_equal(adapted, questioner.next_questions({0}, {12, 6, 13}, 4, config=ASK_ANY))


def test_adaptive_walk_is_the_page_batch_by_batch(bench) -> None:
    import torch

    indptr, items = block_interactions()
    model = StaticFactors(np.random.default_rng(0).normal(size=(14, 3)))
    model._seen_indptr, model._seen_items = torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(items.astype(np.int64))
    questioner = Questioner.of_model(model)
    first = np.array([12, 6, 13, 7, 0, 8])
    user_items, user_ratings = np.array([1, 2, 3, 4, 12]), np.array([5.0, 4.0, 3.0, 2.0, 1.0])  # a block-A newcomer
    walk = bench.adaptive_walk(model, questioner, first, user_items, user_ratings, ASK_ANY, n_rated=4, batch_size=3)
    # replay the page: batch after batch from the answers so far
    rated, skipped, expected = {}, set(), []
    while len(rated) < 4:
        batch = next_questions(model, rated, skipped, 3, first=first, config=ASK_ANY, questioner=questioner).tolist()
        expected += batch
        for item in batch:
            (rated.__setitem__(item, 1.0) if item in user_items else skipped.add(item))
    assert walk.tolist() == expected
    assert walk[:3].tolist() == [12, 6, 13]  # the fixed order's head, then block A: no more B movies asked
    assert set(walk[3:].tolist()) <= BLOCK_A
    assert len(set(walk.tolist())) == len(walk)
    assert bench.movies_shown(walk, user_items, 4) <= len(walk)
    capped = bench.adaptive_walk(model, questioner, first, user_items, user_ratings, ASK_ANY, n_rated=20, max_shown=5, batch_size=3)
    assert len(capped) == 6  # stops after the batch that crosses max_shown
    walks = bench.adaptive_walks(model, questioner, first, newcomers_on(14), ASK_ANY)
    assert set(walks) == {0, 1}
    assert all(len(set(w.tolist())) == len(w) for w in walks.values())


def newcomers_on(n_items: int) -> Dataset:
    """Two newcomers over `n_items` items: 0 rated items 1, 2, 3; 1 rated items 7, 8, 12; user 2 rated nothing."""
    users, items, ratings = np.array([0, 0, 0, 1, 1, 1]), np.array([1, 2, 3, 7, 8, 12]), np.array([4.0, 3.0, 5.0, 2.0, 4.0, 3.5])
    return Dataset.from_arrays("newcomers", users, items, ratings, user_map=IdMap(np.arange(3)), item_map=IdMap(np.arange(n_items)))


def test_tuning_keeps_the_defaults_unless_clearly_beaten(bench) -> None:
    assert "keep them" in bench.verdict(0.65, 0.65 - 0.5 * bench.MARGIN)
    assert "change the defaults" in bench.verdict(0.65, 0.65 - 2 * bench.MARGIN)
    assert "not on this grid" in bench.verdict(0.65, float("nan"))
    # the page's defaults are on both grids, so every run says whether to keep them
    grid = list(bench.tune_grid())
    assert (bench.CO_WATCH_REGULARIZATION, bench.Weights()) in grid
    assert len(grid) == len(set(grid))
    assert {weights.hide_not_seen for _, weights in grid} == {False, True}
    config = bench.DEFAULT_QUESTIONS
    assert (config.lift, config.design, config.evidence, config.reach) in set(
        itertools.product(bench.TUNE_LIFT, bench.TUNE_DESIGN, bench.TUNE_EVIDENCE, bench.TUNE_REACH)
    )

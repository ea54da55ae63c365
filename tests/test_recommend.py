"""Recommendations for a profile: filters, novelty, diversity, reasons, overlap and comparison."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from recengine.data.dataset import Dataset, IdMap, make_catalogue
from recengine.models.base import create_model
from recengine.recommend import (
    CO_WATCH_RANGE,
    DEFAULT_CO_WATCH,
    DEFAULT_NOVELTY,
    DEFAULT_SEEN,
    SEEN_RANGE,
    CoWatch,
    NOVELTY_RANGE,
    Recommendation,
    RecommendationFilter,
    compare_models,
    generic_overlap,
    popularity_overlap,
    popularity_ranking,
    profile_is_thin,
    co_watch_scores,
    ranking_values,
    recommend_profile,
    seen_scores,
    similar_to,
)
from recengine.onboarding import Questioner


from fakes import FixedFactors  # noqa: E402  (tests/fakes.py)


def standardise(x: np.ndarray) -> np.ndarray:
    """The z-score `ranking_values` applies to each signal over the candidates."""
    return (x - x.mean()) / x.std()


def catalogue_for(n_items: int, popularity=None, genres=None, years=None) -> pd.DataFrame:
    """A catalogue whose `popularity` column is `popularity` (default: all 1)."""
    popularity = np.ones(n_items, dtype=np.int64) if popularity is None else np.asarray(popularity, dtype=np.int64)
    items = np.repeat(np.arange(n_items), popularity)
    titles = [f"Movie {i}" + (f" ({years[i]})" if years is not None and years[i] is not None else "") for i in range(n_items)]
    return make_catalogue(np.arange(n_items), titles, genres, items, np.full(len(items), 3.0), years=years)


def dataset_with_popularity(popularity) -> Dataset:
    """Ratings such that item i has popularity[i] ratings (users 0 .. popularity[i]-1, rating 3)."""
    popularity = np.asarray(popularity, dtype=np.int64)
    users = np.concatenate([np.arange(c) for c in popularity])
    items = np.repeat(np.arange(len(popularity)), popularity)
    return Dataset.from_arrays(
        "pop",
        users,
        items,
        np.full(len(users), 3.0),
        user_map=IdMap(np.arange(int(popularity.max()))),
        item_map=IdMap(np.arange(len(popularity))),
        catalogue=catalogue_for(len(popularity), popularity),
    )


# --- filters ----------------------------------------------------------------------------------
def filter_catalogue() -> pd.DataFrame:
    genres = [("Comedy",), ("Drama", "Romance"), ("Comedy", "Romance"), (), ("Action",), ("Drama",)]
    years = [1994, 1999, 2003, None, 1977, 2010]
    return catalogue_for(6, popularity=[5, 0, 12, 3, 40, 8], genres=genres, years=years)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (RecommendationFilter(), [1, 1, 1, 1, 1, 1]),
        (RecommendationFilter(genres=("Comedy",)), [1, 0, 1, 0, 0, 0]),
        (RecommendationFilter(genres=("Comedy", "Drama")), [1, 1, 1, 0, 0, 1]),
        (RecommendationFilter(genres=("Comedy", "Romance"), genre_match="all"), [0, 0, 1, 0, 0, 0]),
        (RecommendationFilter(genres=("Western",)), [0, 0, 0, 0, 0, 0]),
        (RecommendationFilter(year_range=(1994, 2003)), [1, 1, 1, 0, 0, 0]),
        (RecommendationFilter(year_range=(1999, 1999)), [0, 1, 0, 0, 0, 0]),
        (RecommendationFilter(min_ratings=8), [0, 0, 1, 0, 1, 1]),
        (RecommendationFilter(genres=("Drama",), year_range=(2000, 2020), min_ratings=1), [0, 0, 0, 0, 0, 1]),
    ],
)
def test_filter_mask_is_exact(filters: RecommendationFilter, expected: list[int]) -> None:
    mask = filters.mask(filter_catalogue())
    assert mask.dtype == bool
    assert mask.astype(int).tolist() == expected


def test_filter_validates_and_normalises() -> None:
    assert RecommendationFilter(genres=["Drama"]).genres == ("Drama",)
    assert RecommendationFilter(genres="Drama").genres == ("Drama",)
    assert RecommendationFilter(year_range=[1990, np.int64(2000)]).year_range == (1990, 2000)
    assert RecommendationFilter().is_empty and not RecommendationFilter(min_ratings=1).is_empty
    for bad in (
        {"year_range": (2000, 1990)},
        {"year_range": (1990.5, 2000)},
        {"year_range": 1990},
        {"min_ratings": -1},
        {"min_ratings": 2.5},
        {"genres": (1, 2)},
        {"genre_match": "some"},
    ):
        with pytest.raises(ValueError):
            RecommendationFilter(**bad)


# --- ranking ----------------------------------------------------------------------------------
def test_recommend_profile_ranks_by_score_and_skips_rated_and_filtered() -> None:
    bias = np.array([4.0, 1.0, 4.5, 3.0, 2.0, 4.9])
    model = FixedFactors(np.zeros((6, 2)), bias)
    catalogue = filter_catalogue()
    recs = recommend_profile(model, catalogue, {5: 4.0}, k=3, novelty=0.0)
    assert [r.item_idx for r in recs] == [2, 0, 3]  # 5 is rated
    assert [r.score for r in recs] == pytest.approx([4.5, 4.0, 3.0])
    assert [r.predicted_rating for r in recs] == pytest.approx([4.5, 4.0, 3.0])
    first = recs[0]
    assert (first.title, first.year, first.genres) == ("Movie 2 (2003)", 2003, ("Comedy", "Romance"))
    assert recs[2].year is None
    only_comedy = recommend_profile(model, catalogue, {}, k=5, filters=RecommendationFilter(genres=("Comedy",)), novelty=0.0)
    assert [r.item_idx for r in only_comedy] == [2, 0]
    assert recommend_profile(model, catalogue, {}, k=5, filters=RecommendationFilter(genres=("Western",))) == []


def test_predicted_rating_is_clipped_for_explicit_models_and_absent_for_implicit() -> None:
    bias = np.array([6.0, 0.1, 3.0])
    explicit = recommend_profile(FixedFactors(np.zeros((3, 1)), bias), catalogue_for(3), {}, k=3, explain=False)
    assert [r.predicted_rating for r in explicit] == [5.0, 3.0, 0.5]
    assert [r.score for r in explicit] == pytest.approx([6.0, 3.0, 0.1])
    implicit = recommend_profile(FixedFactors(np.zeros((3, 1)), bias, explicit=False), catalogue_for(3), {}, k=3)
    assert [r.predicted_rating for r in implicit] == [None, None, None]


def test_novelty_one_pushes_popular_items_down() -> None:
    # Items 0..5: popularity falls, score falls slightly with it.
    popularity = np.array([500, 200, 80, 30, 10, 3])
    bias = np.array([4.00, 3.95, 3.90, 3.85, 3.80, 1.00])
    model = FixedFactors(np.zeros((6, 1)), bias)
    catalogue = catalogue_for(6, popularity)
    plain = [r.item_idx for r in recommend_profile(model, catalogue, {}, k=6, novelty=0.0)]
    novel = [r.item_idx for r in recommend_profile(model, catalogue, {}, k=6, novelty=1.0)]
    assert plain == [0, 1, 2, 3, 4, 5]
    # Reference: standardise(score) + standardise(log popularity rank), rank 1 = most popular.
    adjusted = standardise(bias) + standardise(np.log(np.arange(1, 7)))
    # standardise(bias) = [.54 .49 .45 .40 .35 -2.23], standardise(log rank) = [-1.81 -.67 .00 .48 .85 1.15]
    assert novel == np.argsort(-adjusted, kind="stable").tolist() == [4, 3, 2, 1, 5, 0]
    top3_popularity = lambda items: popularity[items[:3]].mean()  # noqa: E731
    assert top3_popularity(novel) == 40 and top3_popularity(plain) == 260
    half = [r.item_idx for r in recommend_profile(model, catalogue, {}, k=6, novelty=0.5)]
    assert half == np.argsort(-(standardise(bias) + 0.5 * standardise(np.log(np.arange(1, 7)))), kind="stable").tolist()


def test_negative_novelty_pulls_popular_items_up() -> None:
    # Item 5 is obscure with a glowing score; items 0..4 are well known with good scores.
    popularity = np.array([500, 200, 80, 30, 10, 3])
    bias = np.array([4.0, 4.1, 4.2, 4.3, 4.4, 4.9])
    model = FixedFactors(np.zeros((6, 1)), bias)
    catalogue = catalogue_for(6, popularity)
    plain = [r.item_idx for r in recommend_profile(model, catalogue, {}, k=6, novelty=0.0)]
    assert plain == [5, 4, 3, 2, 1, 0]
    # standardise(bias) = [-1.09 -.74 -.40 -.06 .29 2.00], standardise(log rank) = [-1.81 -.67 .00 .48 .85 1.15]
    # difference = [.72 -.08 -.40 -.54 -.56 .85]: the most-rated item climbs from last to second
    familiar = [r.item_idx for r in recommend_profile(model, catalogue, {}, k=6, novelty=-1.0)]
    expected = np.argsort(-(standardise(bias) - standardise(np.log(np.arange(1, 7)))), kind="stable").tolist()
    assert familiar == expected == [5, 0, 1, 2, 3, 4]
    default = [r.item_idx for r in recommend_profile(model, catalogue, {}, k=6)]
    assert default == [r.item_idx for r in recommend_profile(model, catalogue, {}, k=6, novelty=DEFAULT_NOVELTY)]
    assert NOVELTY_RANGE[0] <= DEFAULT_NOVELTY <= NOVELTY_RANGE[1]
    assert default == np.argsort(-(standardise(bias) + DEFAULT_NOVELTY * standardise(np.log(np.arange(1, 7)))), kind="stable").tolist()


def test_ranking_values_match_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(3.5, 1.0, size=(4, 9))
    popularity = np.array([50, 7, 7, 300, 1, 0, 12, 90, 7])
    keep = rng.random((4, 9)) > 0.3
    keep[3] = False
    keep[3, 2] = True  # a single candidate: standardised to 0
    scores[0, 1] = np.nan  # never a candidate
    values = ranking_values(scores, popularity, keep, novelty=-0.4)
    # average ranks, 1 = most rated: 300->1, 90->2, 50->3, 12->4, the three 7s share 6, 1->8, 0->9
    log_rank = np.log(np.array([3, 6, 6, 1, 8, 9, 4, 2, 6], dtype=float))
    for row in range(4):
        kept = keep[row] & np.isfinite(scores[row])
        expected = np.full(9, -np.inf)
        if kept.sum() > 1:
            expected[kept] = standardise(scores[row, kept]) - 0.4 * standardise(log_rank[kept])
        else:
            expected[kept] = 0.0
        np.testing.assert_allclose(values[row], expected, atol=1e-12)
        # one profile at a time gives the same values
        np.testing.assert_allclose(ranking_values(scores[row], popularity, keep[row], -0.4), expected, atol=1e-12)
    # novelty 0 is the standardised score alone; a 1-D keep broadcasts over the rows
    only = ranking_values(scores[1:3], popularity, keep[1], 0.0)
    for offset, row in enumerate((1, 2)):
        s = scores[row, keep[1]]
        np.testing.assert_allclose(only[offset, keep[1]], (s - s.mean()) / s.std(), atol=1e-12)
        assert np.all(only[offset, ~keep[1]] == -np.inf)


def test_diversity_one_lowers_the_mean_pairwise_similarity() -> None:
    # Three tight clusters along the axes; cluster 0 holds the five best-scored items.
    rng = np.random.default_rng(0)
    axes = np.repeat(np.eye(3), 5, axis=0)
    factors = axes + 0.01 * rng.normal(size=(15, 3))
    bias = np.concatenate([np.linspace(4.9, 4.5, 5), np.linspace(4.0, 3.6, 5), np.linspace(3.0, 2.6, 5)])
    model = FixedFactors(factors, bias)
    catalogue = catalogue_for(15)

    def mean_similarity(items: list[int]) -> float:
        unit = factors[items] / np.linalg.norm(factors[items], axis=1, keepdims=True)
        return float(np.mean([unit[a] @ unit[b] for a, b in itertools.combinations(range(len(items)), 2)]))

    focused = [r.item_idx for r in recommend_profile(model, catalogue, {}, k=3)]
    diverse = [r.item_idx for r in recommend_profile(model, catalogue, {}, k=3, diversity=1.0)]
    assert focused == [0, 1, 2]
    assert diverse[0] == 0 and sorted(i // 5 for i in diverse) == [0, 1, 2]
    assert mean_similarity(focused) > 0.99
    assert abs(mean_similarity(diverse)) < 0.05
    # A little diversity keeps the best items when they are not redundant enough to matter.
    assert [r.item_idx for r in recommend_profile(model, catalogue, {}, k=2, diversity=0.001)] == [0, 1]


def test_recommend_profile_rejects_bad_arguments() -> None:
    model = FixedFactors(np.zeros((4, 1)))
    catalogue = catalogue_for(4)
    with pytest.raises(ValueError, match="k must be"):
        recommend_profile(model, catalogue, {}, k=0)
    with pytest.raises(ValueError, match="novelty"):
        recommend_profile(model, catalogue, {}, novelty=1.5)
    with pytest.raises(ValueError, match="novelty must be between -1 and 1"):
        recommend_profile(model, catalogue, {}, novelty=-1.01)
    with pytest.raises(ValueError, match="novelty"):
        recommend_profile(model, catalogue, {}, novelty="high")
    with pytest.raises(ValueError, match="diversity"):
        recommend_profile(model, catalogue, {}, diversity=-0.1)
    with pytest.raises(ValueError, match="catalogue has 5 items"):
        recommend_profile(model, catalogue_for(5), {})
    with pytest.raises(ValueError, match="rating for item 1"):
        recommend_profile(model, catalogue, {1: 7.0})
    with pytest.raises(ValueError, match="not in this model's catalogue"):
        recommend_profile(model, catalogue, {9: 4.0})


# --- reasons ----------------------------------------------------------------------------------
def test_leave_one_out_reasons_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    model = FixedFactors(rng.normal(size=(12, 3)), rng.normal(size=12), squash=True)
    ratings = {0: 5.0, 3: 1.0, 7: 4.5, 9: 2.0}
    model.fold_ins = 0
    recs = recommend_profile(model, catalogue_for(12), ratings, k=4)
    assert model.fold_ins == 1 + len(ratings)  # one for the scores, one per left-out rating
    for rec in recs:
        assert rec.exact_reasons is False
        full = model.score_folded(model.fold_in(ratings))[rec.item_idx].item()
        expected = {
            j: full - model.score_folded(model.fold_in({i: r for i, r in ratings.items() if i != j}))[rec.item_idx].item()
            for j in ratings
        }
        got = {reason.item_idx: reason.contribution for reason in rec.reasons}
        assert got == pytest.approx(expected, abs=1e-5)
        contributions = [reason.contribution for reason in rec.reasons]
        assert contributions == sorted(contributions, reverse=True)
        assert {reason.item_idx: reason.rating for reason in rec.reasons} == ratings
        assert all(reason.title == f"Movie {reason.item_idx}" for reason in rec.reasons)


def test_exact_reasons_of_a_linear_model_are_its_own_terms() -> None:
    rng = np.random.default_rng(2)
    factors = rng.normal(size=(10, 2))
    model = FixedFactors(factors, exact=True)
    ratings = {1: 5.0, 4: 2.0, 6: 3.5}
    for rec in recommend_profile(model, catalogue_for(10), ratings, k=5):
        assert rec.exact_reasons is True
        expected = model.explain(ratings, rec.item_idx)
        assert [(r.item_idx, r.contribution) for r in rec.reasons] == [(j, pytest.approx(c, abs=1e-5)) for j, c in expected]
        assert sum(r.contribution for r in rec.reasons) == pytest.approx(rec.score - 0.0, abs=1e-5)


def test_non_additive_reasons_are_shown_as_given_and_not_called_exact() -> None:
    """A model whose per-rating effects need not add up (neural's leave-one-out drops) keeps its
    own numbers: no rescaling to the score change, and no "exact" flag."""

    class Halved(FixedFactors):
        explain_is_additive = False

        def explain(self, ratings, item_idx):
            return [(j, c / 2) for j, c in super().explain(ratings, item_idx)]

    rng = np.random.default_rng(2)
    model = Halved(rng.normal(size=(10, 2)), exact=True)
    ratings = {1: 5.0, 4: 2.0, 6: 3.5}
    for rec in recommend_profile(model, catalogue_for(10), ratings, k=5):
        assert rec.exact_reasons is False
        expected = sorted(model.explain(ratings, rec.item_idx), key=lambda pair: (-pair[1], pair[0]))
        assert [(r.item_idx, r.contribution) for r in rec.reasons] == [(j, pytest.approx(c, abs=1e-9)) for j, c in expected]
        assert sum(r.contribution for r in rec.reasons) == pytest.approx(rec.score / 2, abs=1e-5)


def test_reasons_come_from_one_explain_many_call() -> None:
    """The page asks the model once for all recommended items (`explain_many`), not once per item."""

    class Counting(FixedFactors):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.asked: list[list[int]] = []

        def explain_many(self, ratings, item_idx):
            self.asked.append(np.asarray(item_idx).tolist())
            return super().explain_many(ratings, item_idx)

    rng = np.random.default_rng(3)
    model = Counting(rng.normal(size=(15, 3)), exact=True)
    ratings = {1: 5.0, 4: 2.0, 6: 3.5}
    recs = recommend_profile(model, catalogue_for(15), ratings, k=6)
    assert model.asked == [[rec.item_idx for rec in recs]]
    for rec in recs:
        assert [(r.item_idx, r.contribution) for r in rec.reasons] == [
            (j, pytest.approx(c, abs=1e-5)) for j, c in model.explain(ratings, rec.item_idx)
        ]


def test_explain_many_default_is_one_explain_per_item() -> None:
    rng = np.random.default_rng(4)
    exact = FixedFactors(rng.normal(size=(8, 2)), exact=True)
    ratings = {0: 4.0, 5: 1.5}
    items = np.array([7, 2, 7, 3])
    assert exact.explain_many(ratings, items) == [exact.explain(ratings, int(i)) for i in items]
    assert exact.explain_many(ratings, np.array([], dtype=np.int64)) == []
    assert FixedFactors(rng.normal(size=(8, 2))).explain_many(ratings, items) is None  # explain gives None


def test_als_reasons_equal_its_per_item_explanations() -> None:
    from recengine.data.synthetic import generate_synthetic

    data = generate_synthetic(n_users=60, n_items=40, n_interactions=900, seed=5)
    model = create_model("als", device="cpu", factors=6, iterations=4, seed=0).fit(data)
    ratings = {3: 5.0, 10: 4.0, 17: 4.5}
    recs = recommend_profile(model, data.catalogue, ratings, k=5, novelty=0.0, co_watch=0.0)
    for rec in recs:
        assert rec.exact_reasons is True
        raw = model.explain(ratings, rec.item_idx)
        assert [r.item_idx for r in rec.reasons] == [j for j, _ in raw]
        assert sum(r.contribution for r in rec.reasons) == pytest.approx(rec.score, rel=1e-4, abs=1e-5)


def test_no_reasons_without_ratings_or_when_switched_off() -> None:
    model = FixedFactors(np.eye(3), exact=True)
    assert all(rec.reasons == [] for rec in recommend_profile(model, catalogue_for(3), {}, k=3))
    assert all(rec.reasons == [] for rec in recommend_profile(model, catalogue_for(3), {0: 5.0}, k=2, explain=False))


@pytest.fixture(scope="module")
def small_mf():
    from recengine.data.synthetic import generate_synthetic

    data = generate_synthetic(n_users=150, n_items=60, n_interactions=3000, n_factors=4, seed=4)
    model = create_model("mf", device="cpu", embedding_dim=8, epochs=3, batch_size=256, learning_rate=0.02, seed=0)
    return model.fit(data), data


def test_exact_reasons_on_mf_sum_to_the_score_difference(small_mf) -> None:
    model, data = small_mf
    ratings = {3: 5.0, 10: 1.0, 17: 4.0, 25: 3.5, 40: 2.5}
    recs = recommend_profile(model, data.catalogue, ratings, k=8, novelty=0.0, co_watch=0.0, seen=0.0)  # the model's order
    baseline = model.score_folded(model.fold_in({})).double().numpy()
    for rec in recs:
        assert rec.exact_reasons is True
        assert sum(r.contribution for r in rec.reasons) == pytest.approx(rec.score - baseline[rec.item_idx], abs=1e-4)
        # Same order and proportions as the model's own (pre-activation) attribution.
        raw = model.explain(ratings, rec.item_idx)
        assert [r.item_idx for r in rec.reasons] == [j for j, _ in raw]
        ratios = [r.contribution / c for r, (_, c) in zip(rec.reasons, raw) if abs(c) > 1e-3]
        assert max(ratios) == pytest.approx(min(ratios), rel=1e-6) and min(ratios) > 0
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


# --- popularity overlap and thin profiles ------------------------------------------------------
def test_popularity_ranking_excludes_and_breaks_ties_by_index() -> None:
    train = dataset_with_popularity([3, 9, 3, 1, 9])
    assert popularity_ranking(train).tolist() == [1, 4, 0, 2, 3]
    assert popularity_ranking(train, exclude=[4, 0], k=2).tolist() == [1, 2]


def test_popularity_overlap_and_thin_profiles() -> None:
    popularity = np.arange(20, 0, -1) * 3  # item 0 the most rated, all counts distinct
    train = dataset_with_popularity(popularity)
    ratings = {0: 4.0}  # the popularity top 3 without it: items 1, 2, 3
    assert popularity_overlap([3, 1, 2, 9], ratings, train, k=3) == 1.0
    assert popularity_overlap([19, 18, 17], ratings, train, k=3) == 0.0
    assert popularity_overlap([1, 2, 15, 16], ratings, train, k=4) == 0.5  # 1, 2 of the top 4: 1, 2, 3, 4
    assert popularity_overlap([], ratings, train) == 0.0
    assert popularity_overlap(np.array([1, 19]), ratings, train, k=2) == 0.5  # any sequence of indices

    ten = {item: 5.0 for item in range(10)}  # the ten most rated: the popularity top 2 is now 10, 11
    anyone = [0, 19, 1, 18, 17, 16]  # the list with no ratings: rated items 0 and 1 are dropped from it
    assert popularity_overlap([13, 12], ten, train, k=2) == 0.0  # 13, 12 against 10, 11
    assert generic_overlap([13, 12], anyone, ten, k=2) == 0.0  # 13, 12 against 19, 18
    assert generic_overlap([13, 12, 19, 18], anyone, ten, k=4) == 0.5  # against 19, 18, 17, 16
    assert generic_overlap([0, 19, 1, 18], anyone, {}, k=4) == 1.0
    assert profile_is_thin([13, 12], anyone, ratings, train) is True  # one rating is thin whatever the list
    assert profile_is_thin([13, 12], anyone, ten, train, k=2) is False
    assert profile_is_thin([13, 12, 19, 18], anyone, ten, train, k=4, max_overlap=0.4) is True  # generic overlap 0.5
    assert profile_is_thin([10, 11], anyone, ten, train, k=2) is True  # popularity overlap 1.0
    assert profile_is_thin([10, 11], anyone, ten, train, k=2, max_overlap=1.0) is False  # 1.0 is not above 1.0
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            popularity_overlap([1], ratings, train, k=bad)
        with pytest.raises(ValueError, match="k must be"):
            generic_overlap([1], anyone, ratings, k=bad)


# --- comparison and similar items ---------------------------------------------------------------
def test_compare_models_overlap_and_jaccard() -> None:
    catalogue = catalogue_for(6)
    model_a = FixedFactors(np.zeros((6, 1)), [6, 5, 4, 3, 2, 1])
    model_b = FixedFactors(np.zeros((6, 1)), [1, 5, 2, 6, 3, 4])
    list_a, list_b, overlap, jaccard = compare_models(model_a, model_b, catalogue, {}, k=3)
    assert [r.item_idx for r in list_a] == [0, 1, 2] and [r.item_idx for r in list_b] == [3, 1, 5]
    assert overlap == [1] and jaccard == pytest.approx(1 / 5)
    same = compare_models(model_a, model_a, catalogue, {}, k=3)
    assert same[2] == [0, 1, 2] and same[3] == 1.0
    assert all(isinstance(r, Recommendation) for r in same[0])


def test_similar_to_matches_cosine_brute_force_and_filters() -> None:
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(9, 3))
    model = FixedFactors(factors)
    catalogue = catalogue_for(9, popularity=[1, 2, 3, 4, 5, 6, 7, 8, 9])
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    cosine = unit @ unit[4]
    cosine[4] = -np.inf
    expected = np.argsort(-cosine, kind="stable")[:3]
    got = similar_to(model, 4, 3, catalogue=catalogue)
    assert [item for item, _, _ in got] == expected.tolist()
    assert [score for _, _, score in got] == pytest.approx(cosine[expected].tolist(), abs=1e-6)
    assert [title for _, title, _ in got] == [f"Movie {i}" for i in expected]
    assert [title for _, title, _ in similar_to(model, 4, 3)] == [f"Item {i}" for i in expected]
    popular_only = similar_to(model, 4, 3, catalogue=catalogue, filters=RecommendationFilter(min_ratings=7))
    kept = [i for i in np.argsort(-cosine, kind="stable") if i >= 6][:3]
    assert [item for item, _, _ in popular_only] == kept
    with pytest.raises(ValueError, match="catalogue"):
        similar_to(model, 4, 3, filters=RecommendationFilter(min_ratings=7))


# --- co-watch -----------------------------------------------------------------------------------
def csr_of(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) of a users x items pattern given as each user's item list."""
    indptr = np.concatenate([[0], np.cumsum([len(row) for row in rows])]).astype(np.int64)
    items = np.array([item for row in rows for item in row], dtype=np.int64)
    return indptr, items


def with_training(model: FixedFactors, rows: list[list[int]]) -> FixedFactors:
    """`model` carrying a training pattern, as a fitted (or loaded) model does."""
    indptr, items = csr_of(rows)
    model._seen_indptr, model._seen_items = torch.from_numpy(indptr), torch.from_numpy(items)
    return model


def test_co_watch_weights_by_hand() -> None:
    # users {A, B}, {A}, {B}: X^T X = [[2, 1], [1, 2]]; with lambda 1, each column is the ridge
    # regression of one item on the other: b = (2 + 1)^-1 * 1 = 1/3.
    indptr, items = csr_of([[0, 1], [0], [1]])
    co_watch = CoWatch.from_interactions(indptr, items, 2, regularization=1.0)
    np.testing.assert_allclose(co_watch.weights, [[0.0, 1 / 3], [1 / 3, 0.0]], atol=1e-7)
    np.testing.assert_allclose(co_watch.scores(np.array([True, False])), [0.0, 1 / 3], atol=1e-7)
    np.testing.assert_allclose(co_watch.scores(np.array([[True, True], [False, False]])), [[1 / 3, 1 / 3], [0.0, 0.0]], atol=1e-7)


def test_co_watch_weights_match_per_column_ridge_regressions() -> None:
    rng = np.random.default_rng(4)
    dense = rng.random((30, 7)) < 0.4
    rows = [np.flatnonzero(row).tolist() + np.flatnonzero(row)[:1].tolist() for row in dense]  # a repeat counts once
    indptr, items = csr_of(rows)
    co_watch = CoWatch.from_interactions(indptr, items, 7, regularization=2.5)
    x = dense.astype(float)
    for j in range(7):
        others = [i for i in range(7) if i != j]
        expected = np.linalg.solve(x[:, others].T @ x[:, others] + 2.5 * np.eye(6), x[:, others].T @ x[:, j])
        np.testing.assert_allclose(co_watch.weights[others, j], expected, rtol=1e-5, atol=1e-6)
        assert co_watch.weights[j, j] == 0.0
    profile = np.zeros(7, dtype=bool)
    profile[[1, 4]] = True
    np.testing.assert_allclose(co_watch.scores(profile), co_watch.weights[1] + co_watch.weights[4], rtol=1e-6)


def test_co_watch_keeps_the_most_rated_items_and_scores_the_rest_zero() -> None:
    # item counts: 0 -> 3, 1 -> 1, 2 -> 3, 3 -> 2, 4 -> 0
    indptr, items = csr_of([[0, 2, 3], [0, 2, 3], [0, 1, 2]])
    co_watch = CoWatch.from_interactions(indptr, items, 5, regularization=1.0, max_items=3)
    assert co_watch.pool.tolist() == [0, 2, 3]
    scores = co_watch.scores(np.array([True, True, False, False, False]))
    assert scores[1] == 0.0 and scores[4] == 0.0  # outside the pool
    assert scores[2] > 0 and scores[3] > 0  # watched with item 0
    everything = CoWatch.from_interactions(indptr, items, 5, regularization=1.0)
    assert everything.pool.tolist() == [0, 1, 2, 3]  # never-rated items are left out
    for bad in ({"regularization": 0.0}, {"regularization": -1.0}, {"max_items": 0}, {"max_items": 2.5}):
        with pytest.raises(ValueError):
            CoWatch.from_interactions(indptr, items, 5, **bad)
    with pytest.raises(ValueError, match="5 columns"):
        co_watch.scores(np.zeros(4, dtype=bool))


def test_co_watch_of_a_model_is_built_once_per_training() -> None:
    model = with_training(FixedFactors(np.zeros((3, 1))), [[0, 1], [0, 1], [2]])
    first = CoWatch.of_model(model)
    assert first is CoWatch.of_model(model)
    expected = CoWatch.from_interactions(*csr_of([[0, 1], [0, 1], [2]]), 3)
    np.testing.assert_array_equal(first.weights, expected.weights)
    np.testing.assert_allclose(co_watch_scores(model, {0: 4.0}), expected.scores(np.array([True, False, False])))
    with_training(model, [[0, 2], [0, 2]])  # trained again: new weights
    again = CoWatch.of_model(model)
    assert again is not first and again.pool.tolist() == [0, 2]
    after_first = again.scores(np.array([True, False, False]))
    assert after_first[1] == 0.0 and after_first[2] > 0
    bare = FixedFactors(np.zeros((3, 1)))  # built by hand: no training interactions
    assert CoWatch.of_model(bare) is None
    assert co_watch_scores(bare, {0: 4.0}).tolist() == [0.0, 0.0, 0.0]


#: Four items, the last one not a candidate, for the `ranking_values` tests: model scores,
#: co-watch scores, popularity (ranks [4, 1, 3] among the candidates) and the candidates' log rank.
BLEND_SCORES = np.array([4.0, 3.0, 2.0, 5.0])
BLEND_CO_WATCH = np.array([0.0, 0.6, 0.2, 0.1])
BLEND_POPULARITY = np.array([10, 40, 20, 30])
BLEND_KEEP = np.array([True, True, True, False])
BLEND_LOG_RANK = np.log([4.0, 1.0, 3.0])


def test_ranking_values_blend_is_the_weighted_sum_of_standardised_signals() -> None:
    scores, co_watch, popularity, keep, log_rank = BLEND_SCORES, BLEND_CO_WATCH, BLEND_POPULARITY, BLEND_KEEP, BLEND_LOG_RANK
    # candidates 0..2: standardise(scores) = [1.22, 0, -1.22], standardise(co_watch) = [-1.07, 1.34, -0.27]
    values = ranking_values(scores, popularity, keep, -0.3, co_watch=co_watch, co_watch_weight=2.0)
    expected = standardise(scores[:3]) + 2.0 * standardise(co_watch[:3]) - 0.3 * standardise(log_rank)
    np.testing.assert_allclose(values[:3], expected, atol=1e-12)
    assert values[3] == -np.inf
    assert np.argmax(values) == 1  # the co-watch favourite wins at this weight
    # weight 0, or no co-watch scores, is the model alone
    alone = ranking_values(scores, popularity, keep, -0.3)
    np.testing.assert_allclose(ranking_values(scores, popularity, keep, -0.3, co_watch=co_watch, co_watch_weight=0.0), alone)
    # an empty profile's co-watch scores are all equal: they add nothing
    np.testing.assert_allclose(ranking_values(scores, popularity, keep, -0.3, co_watch=np.zeros(4), co_watch_weight=2.0), alone)
    # many profiles at once, row by row
    stacked = np.stack([co_watch, co_watch])
    both = ranking_values(np.stack([scores, scores[::-1]]), popularity, keep, -0.3, co_watch=stacked, co_watch_weight=2.0)
    np.testing.assert_allclose(both[0], values)
    with pytest.raises(ValueError, match="shape"):
        ranking_values(scores, popularity, keep, co_watch=co_watch[:3], co_watch_weight=1.0)


def test_recommend_profile_weighs_in_what_people_who_rated_the_same_also_rated() -> None:
    # The model prefers items 1, 2, 3 in that order; everyone who rated item 0 also rated item 3.
    bias = np.array([3.0, 4.0, 3.9, 3.8, 3.0])
    training = [[0, 3], [0, 3], [0, 3], [1], [2], [1, 2], [4]]
    model = with_training(FixedFactors(np.zeros((5, 1)), bias), training)
    catalogue = catalogue_for(5)  # equal popularity: the novelty term is zero
    ratings = {0: 4.0}
    alone = [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=4, co_watch=0.0, seen=0.0)]
    assert alone == [1, 2, 3, 4]
    blended = recommend_profile(model, catalogue, ratings, k=4, co_watch=1.0, seen=0.0)
    watched = CoWatch.of_model(model).scores(np.array([True, False, False, False, False]))
    expected = np.argsort(-(standardise(bias[1:]) + 1.0 * standardise(watched[1:])), kind="stable") + 1
    assert [r.item_idx for r in blended] == expected.tolist() and blended[0].item_idx == 3
    assert [r.score for r in blended] == pytest.approx([bias[r.item_idx] for r in blended])  # the shown score is the model's
    default = [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=4)]
    assert default == [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=4, co_watch=DEFAULT_CO_WATCH)]
    assert CO_WATCH_RANGE[0] < DEFAULT_CO_WATCH <= CO_WATCH_RANGE[1]
    for bad in (-0.1, 4.5, "lots", True):
        with pytest.raises(ValueError, match="co_watch"):
            recommend_profile(model, catalogue, ratings, co_watch=bad)


def test_ranking_values_add_the_weighted_standardised_seen_term() -> None:
    scores, co_watch, popularity, keep, log_rank = BLEND_SCORES, BLEND_CO_WATCH, BLEND_POPULARITY, BLEND_KEEP, BLEND_LOG_RANK
    seen = np.log([0.2, 0.1, 0.99, 0.3])
    values = ranking_values(scores, popularity, keep, 0.25, co_watch=co_watch, co_watch_weight=0.5, seen=seen, seen_weight=3.0)
    expected = standardise(scores[:3]) + 0.5 * standardise(co_watch[:3]) + 3.0 * standardise(seen[:3]) + 0.25 * standardise(log_rank)
    np.testing.assert_allclose(values[:3], expected, atol=1e-12)
    assert values[3] == -np.inf and np.argmax(values) == 2  # the likely-seen movie wins at this weight
    without = ranking_values(scores, popularity, keep, 0.25, co_watch=co_watch, co_watch_weight=0.5)
    np.testing.assert_allclose(ranking_values(scores, popularity, keep, 0.25, co_watch=co_watch, co_watch_weight=0.5, seen=seen), without)
    with pytest.raises(ValueError, match="seen must have the shape"):
        ranking_values(scores, popularity, keep, seen=seen[:3], seen_weight=1.0)


#: Users 0-19 watch block A (items 0-5), users 20-39 block B (items 6-11), each all of their block
#: but one; everyone watches item 12; item 13 is watched by users 0-3 only.
BLOCKS = [[i for i in (range(6) if u < 20 else range(6, 12)) if i % 6 != u % 6] + [12] + ([13] if u < 4 else []) for u in range(40)]


def test_seen_scores_are_the_questioners_for_the_models_training_data() -> None:
    model = with_training(FixedFactors(np.zeros((14, 1))), BLOCKS)
    questioner = Questioner.of_model(model)
    expected = questioner.seen_log_probability([12], [6, 7])
    np.testing.assert_allclose(seen_scores(model, {12: 4.0}, {6, 7}), expected)
    assert expected[12] == 0.0  # rated: certainly seen
    # after "not seen" for two B movies, the other B movies are less likely than any A movie
    assert expected[8:12].max() < expected[0:6].min()
    # a model without training interactions has no seen term; indices are checked
    assert seen_scores(FixedFactors(np.zeros((3, 1))), {0: 4.0}, {1}).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"skipped must hold item indices in 0\.\.13, got 14"):
        seen_scores(model, {12: 4.0}, {14})


def test_recommend_profile_weighs_in_what_the_answers_say_was_seen() -> None:
    # A flat model (every score equal) and equal popularity: the seen term alone orders the list.
    model = with_training(FixedFactors(np.zeros((14, 1)), np.full(14, 3.0)), BLOCKS)
    catalogue = catalogue_for(14)
    ratings, not_seen = {12: 4.0}, {6, 7}
    shown = dict(co_watch=0.0, novelty=0.0, not_seen=not_seen, hide_not_seen=False)
    ranked = [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=13, **shown)]
    # with hiding off, the skipped movies stay candidates, ranked by the other answers
    assert sorted(ranked) == [i for i in range(14) if i != 12]
    likely = seen_scores(model, ratings, not_seen)
    assert ranked == sorted(ranked, key=lambda item: (-likely[item], item))
    assert set(ranked[:6]) == set(range(6))  # block A first: the answers point away from B
    # without answers beyond the rating, both blocks are as likely; the weight 0 leaves the term out
    plain = [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=13, co_watch=0.0, novelty=0.0)]
    assert set(plain[:6]) != set(range(6)) or set(plain[6:12]) != set(range(6, 12))
    off = [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=13, seen=0.0, **shown)]
    assert off == sorted(off)  # all scores equal: ties go to the lower index
    default = [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=13, not_seen=not_seen)]
    assert default == [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=13, seen=DEFAULT_SEEN, not_seen=not_seen)]
    assert SEEN_RANGE[0] < DEFAULT_SEEN <= SEEN_RANGE[1]
    for bad in (-0.5, 4.5, "often", True):
        with pytest.raises(ValueError, match="seen"):
            recommend_profile(model, catalogue, ratings, seen=bad)


def test_recommend_profile_hides_the_movies_passed_over_by_default() -> None:
    model = with_training(FixedFactors(np.zeros((14, 1)), np.full(14, 3.0)), BLOCKS)
    catalogue = catalogue_for(14)
    ratings, not_seen = {12: 4.0}, {6, 7}
    hidden = [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=13, not_seen=not_seen)]
    shown = [r.item_idx for r in recommend_profile(model, catalogue, ratings, k=13, not_seen=not_seen, hide_not_seen=False)]
    assert sorted(hidden) == [i for i in range(14) if i not in (6, 7, 12)]
    assert hidden == [item for item in shown if item not in not_seen]  # the rest keep their order
    # the same for both models of a comparison, unless asked otherwise
    list_a, list_b, _, _ = compare_models(model, model, catalogue, ratings, k=13, not_seen=not_seen)
    assert [r.item_idx for r in list_a] == [r.item_idx for r in list_b] == hidden
    list_a, _, _, _ = compare_models(model, model, catalogue, ratings, k=13, not_seen=not_seen, hide_not_seen=False)
    assert [r.item_idx for r in list_a] == shown
    # every not-seen movie is a real one: a bad index is named, not silently dropped
    with pytest.raises(ValueError, match=r"not_seen must hold item indices in 0\.\.13, got 14"):
        recommend_profile(model, catalogue, ratings, not_seen={14})

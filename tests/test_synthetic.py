"""Synthetic generator and checkerboard: sizes, scale, no duplicates, and the structure they promise."""

from __future__ import annotations

import numpy as np
import pytest

from recengine.data.dataset import CATALOGUE_COLUMNS, Dataset
from recengine.data.splits import split_random
from recengine.data.synthetic import GENRES, checkerboard, generate_synthetic


@pytest.fixture(scope="module")
def default() -> Dataset:
    return generate_synthetic()


def pair_keys(dataset: Dataset) -> np.ndarray:
    return dataset.users.astype(np.int64) * dataset.n_items + dataset.items


def cluster_of(dataset: Dataset) -> np.ndarray:
    """The cluster of each item, read back from its first genre."""
    return np.array([GENRES.index(genres[0]) for genres in dataset.catalogue["genres"]])


# --- shape, dtypes, scale ---------------------------------------------------------------------
def test_default_sizes_dtypes_and_ids(default):
    assert repr(default) == "<Dataset synthetic (1000 users x 500 items x 50000 ratings)>"
    assert default.users.dtype == np.int32 and default.items.dtype == np.int32
    assert default.ratings.dtype == np.float32 and default.timestamps.dtype == np.int64
    assert default.user_map.ids.tolist() == list(range(1, 1001))
    assert default.item_map.ids.tolist() == list(range(1, 501))
    assert default.source is None and default.rating_scale == (0.5, 5.0)


def test_every_user_has_ratings_and_no_pair_repeats(default):
    assert len(np.unique(pair_keys(default))) == len(default)
    counts = np.bincount(default.users, minlength=default.n_users)
    assert counts.min() >= 5 and counts.max() <= default.n_items
    assert counts.max() > 4 * counts.mean()  # heavy-tailed activity


def test_ratings_are_half_stars_on_the_scale_with_a_movielens_like_spread(default):
    assert set(np.unique(default.ratings).tolist()) == {0.5 * k for k in range(1, 11)}
    assert 3.2 < default.ratings.mean() < 3.7
    assert 0.8 < default.ratings.std() < 1.3
    whole = generate_synthetic(n_users=100, n_items=50, n_interactions=2000, rating_scale=(1.0, 5.0), seed=2)
    assert set(np.unique(whole.ratings).tolist()) <= {1.0 + 0.5 * k for k in range(9)}
    assert whole.rating_scale == (1.0, 5.0)


def test_timestamps_increase_strictly_within_each_user_and_rows_are_grouped_by_user(default):
    assert np.all(np.diff(default.users) >= 0)
    same_user = default.users[1:] == default.users[:-1]
    assert np.all(np.diff(default.timestamps)[same_user] > 0)
    assert default.timestamps.min() >= 820_454_400  # 1996-01-01


def test_catalogue_has_titles_years_and_genres_for_the_app(default):
    catalogue = default.catalogue
    assert tuple(catalogue.columns) == CATALOGUE_COLUMNS
    first = catalogue.iloc[16]
    assert first["title"] == f"Synthetic Movie 17 ({first['year']})"
    assert first["display_title"] == first["title"]
    assert catalogue["year"].between(1930, 2019).all()
    assert all(1 <= len(genres) <= 2 and set(genres) <= set(GENRES) for genres in catalogue["genres"])
    assert np.array_equal(catalogue["popularity"].to_numpy(), default.item_popularity())


def test_same_seed_same_data_other_seed_other_data():
    first, again, other = (generate_synthetic(200, 80, 3000, seed=seed) for seed in (7, 7, 8))
    for name in ("users", "items", "ratings", "timestamps"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert first.catalogue.equals(again.catalogue)
    assert not np.array_equal(pair_keys(first), pair_keys(other))


@pytest.mark.parametrize(
    ("n_users", "n_items", "n_interactions"),
    [(5, 4, 20), (5, 4, 5), (1, 1, 1), (300, 30, 8000), (40, 2000, 20000)],
)
def test_extreme_densities_keep_exact_counts_without_duplicates(n_users, n_items, n_interactions):
    dataset = generate_synthetic(n_users, n_items, n_interactions, seed=1)
    assert len(dataset) == n_interactions
    assert len(np.unique(pair_keys(dataset))) == n_interactions
    assert np.bincount(dataset.users, minlength=n_users).min() >= 1


def test_a_full_matrix_holds_every_pair_once():
    dataset = generate_synthetic(6, 5, 30, seed=0)
    assert sorted(pair_keys(dataset).tolist()) == list(range(30))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_interactions": 10}, "n_interactions must be between n_users"),
        ({"n_interactions": 1000 * 500 + 1}, "n_interactions must be between n_users"),
        ({"n_users": 0}, "n_users and n_items must be >= 1"),
        ({"n_factors": 0}, "n_factors must be >= 1"),
        ({"popularity_exponent": -1.0}, "popularity_exponent must be between 0"),
        ({"popularity_exponent": 11.0}, "popularity_exponent must be between 0"),
        ({"noise": -0.1}, "noise must be >= 0"),
        ({"rating_scale": (5.0, 1.0)}, "rating_scale must be"),
    ],
)
def test_invalid_arguments_are_rejected_with_the_allowed_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic(**kwargs)


# --- structure --------------------------------------------------------------------------------
def top_decile_share(dataset: Dataset) -> float:
    popularity = np.sort(dataset.item_popularity())[::-1]
    return float(popularity[: len(popularity) // 10].sum() / popularity.sum())


def test_popularity_is_skewed_by_the_power_law(default):
    uniform = generate_synthetic(popularity_exponent=0.0)
    steep = generate_synthetic(popularity_exponent=1.5)
    # Top 10 % of items: ~12 % of ratings when uniform, ~33 % at exponent 1, ~44 % at 1.5.
    assert top_decile_share(uniform) < 0.15
    assert top_decile_share(default) > 0.28
    assert top_decile_share(steep) > top_decile_share(default) + 0.05


def test_users_concentrate_on_a_few_clusters(default):
    clusters = cluster_of(default)
    n_clusters = clusters.max() + 1
    per_user = np.zeros((default.n_users, n_clusters))
    np.add.at(per_user, (default.users, clusters[default.items]), 1)
    top_share = per_user.max(axis=1) / per_user.sum(axis=1)
    assert n_clusters == 18
    assert top_share.mean() > 3 / n_clusters  # far from spreading evenly


def fit_als(train: Dataset, rank: int, regularisation: float = 5.0, iterations: int = 6) -> tuple[float, np.ndarray, np.ndarray]:
    """Tiny alternating least squares on mean-centred ratings (rank + 1 columns, one fixed to 1 on
    each side so users and items get biases); returns (mean, user matrix, item matrix)."""
    mean = float(train.ratings.mean())
    residual = train.ratings - mean
    rng = np.random.default_rng(0)
    sides = [
        (train.users, train.n_users, 0.1 * rng.standard_normal((train.n_users, rank + 2))),
        (train.items, train.n_items, 0.1 * rng.standard_normal((train.n_items, rank + 2))),
    ]
    sides[0][2][:, -1] = 1.0  # user column rank+1 is constant: pairs with the item bias
    sides[1][2][:, -2] = 1.0  # item column rank is constant: pairs with the user bias
    for _ in range(iterations):
        for side, fixed_column in ((0, -1), (1, -2)):
            index, n_rows, matrix = sides[side]
            other_index, _, other = sides[1 - side]
            free = [c for c in range(rank + 2) if c != rank + 2 + fixed_column]
            features = other[other_index][:, free]
            target = residual - matrix[index, fixed_column] * other[other_index, fixed_column]
            gram = np.zeros((n_rows, len(free), len(free)))
            for a in range(len(free)):
                for b in range(len(free)):
                    gram[:, a, b] = np.bincount(index, features[:, a] * features[:, b], minlength=n_rows)
            rhs = np.stack([np.bincount(index, features[:, a] * target, minlength=n_rows) for a in range(len(free))], axis=1)
            matrix[:, free] = np.linalg.solve(gram + regularisation * np.eye(len(free)), rhs[..., None])[..., 0]
    return mean, sides[0][2], sides[1][2]


def als_rmse(dataset: Dataset, rank: int) -> tuple[float, float]:
    """(RMSE of the global mean, RMSE of rank-`rank` ALS with biases) on a random 20 % test split."""
    split = split_random(dataset, seed=0)
    mean, user_matrix, item_matrix = fit_als(split.train, rank)
    predicted = mean + np.einsum("ij,ij->i", user_matrix[split.test.users], item_matrix[split.test.items])
    predicted = np.clip(predicted, *dataset.rating_scale)
    baseline = float(np.sqrt(np.mean((split.test.ratings - mean) ** 2)))
    return baseline, float(np.sqrt(np.mean((split.test.ratings - predicted) ** 2)))


def test_matrix_factorisation_learns_the_ratings_down_to_the_noise():
    clean = generate_synthetic(500, 200, 25000, noise=0.0, seed=1)
    noisy = generate_synthetic(500, 200, 25000, noise=1.0, seed=1)
    baseline, biases_only = als_rmse(clean, rank=0)
    _, factors = als_rmse(clean, rank=8)
    assert factors < 0.75 * biases_only < 0.75 * baseline  # the latent part is learnable
    _, noisy_factors = als_rmse(noisy, rank=8)
    # Noise 1.0 is one star of irreducible error (spread is one star on 0.5..5).
    assert 0.9 < noisy_factors < 1.2 and noisy_factors > factors + 0.3


def transitions(dataset: Dataset) -> tuple[float, float]:
    """(share of next items in the same or the next cluster, share of same-cluster steps moving forward)."""
    clusters = cluster_of(dataset)
    n_clusters = clusters.max() + 1
    same_user = dataset.users[1:] == dataset.users[:-1]
    before, after = dataset.items[:-1][same_user], dataset.items[1:][same_user]
    cluster_before, cluster_after = clusters[before], clusters[after]
    near = (cluster_after == cluster_before) | (cluster_after == (cluster_before + 1) % n_clusters)
    same = cluster_after == cluster_before
    return float(near.mean()), float((after[same] > before[same]).mean())


def test_sequential_users_walk_clusters_and_series_in_order():
    ordered = generate_synthetic(300, 200, 12000, sequential=True, seed=4)
    shuffled = generate_synthetic(300, 200, 12000, sequential=False, seed=4)
    near, forward = transitions(ordered)
    assert near > 0.85 and forward > 0.75
    near_random, forward_random = transitions(shuffled)
    assert near_random < 0.35 and 0.4 < forward_random < 0.6
    # The same (user, item) pairs either way: only the order differs.
    assert np.array_equal(np.sort(pair_keys(ordered)), np.sort(pair_keys(shuffled)))


# --- checkerboard -----------------------------------------------------------------------------
def test_checkerboard_matches_its_documented_layout():
    board = checkerboard()
    assert repr(board) == "<Dataset checkerboard (8 users x 8 items x 40 ratings)>"
    ratings = {(u, i): r for u, i, r in zip(board.users.tolist(), board.items.tolist(), board.ratings.tolist())}
    assert {i: r for (u, i), r in ratings.items() if u == 0} == {1: 5.0, 2: 5.0, 3: 5.0, 4: 1.0, 5: 1.0}
    assert {i: r for (u, i), r in ratings.items() if u == 5} == {4: 5.0, 6: 5.0, 7: 5.0, 1: 1.0, 2: 1.0}
    for user in range(8):
        own = range(0, 4) if user < 4 else range(4, 8)
        unrated_own = [item for item in own if (user, item) not in ratings]
        assert unrated_own == [own[user % 4]]
        assert all(ratings[(user, item)] == 5.0 for item in own if item != own[user % 4])
        assert sorted(r for (u, i), r in ratings.items() if u == user and i not in own) == [1.0, 1.0]
    assert np.all(np.diff(board.timestamps) == 60)
    assert board.catalogue["genres"].tolist() == [("Comedy",)] * 4 + [("Drama",)] * 4


def test_checkerboard_top_unseen_item_by_item_similarity_is_the_own_group_item():
    board = checkerboard(10, 12)
    liked = np.zeros((board.n_users, board.n_items))
    liked[board.users, board.items] = board.ratings >= 4.0
    norms = np.linalg.norm(liked, axis=0)
    similarity = liked.T @ liked / np.outer(norms, norms)
    scores = liked @ similarity
    scores[board.users, board.items] = -np.inf  # exclude seen
    best = scores.argmax(axis=1)
    # Users 0..4 are group A (items 0..5), user j misses own item j % 6; group B likewise.
    assert best.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]


def test_checkerboard_rejects_boards_too_small_for_two_groups():
    with pytest.raises(ValueError, match="at least 4 users and 4 items"):
        checkerboard(3, 8)

"""The latent map: PCA of item factors, axis descriptions, placing a user, colours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from recengine.data.dataset import IdMap, make_catalogue
from recengine.models.base import Recommender, create_model
from recengine.projection import (
    COLOUR_BY,
    colour_values,
    describe_components,
    item_biases,
    nearest_in_map,
    project_items,
    project_vector,
)


@dataclass(frozen=True)
class NoConfig:
    """The fixed-factor test model has no hyper-parameters."""


class Factors(Recommender):
    """A model that is nothing but given item factors (and, optionally, item biases)."""

    name = "given-factors"
    Config = NoConfig

    def __init__(self, factors: np.ndarray, item_bias: np.ndarray | None = None) -> None:
        super().__init__(NoConfig(), device="cpu")
        self.factors = np.asarray(factors, dtype=np.float32)
        if item_bias is not None:
            self.item_bias = np.asarray(item_bias, dtype=np.float32)
        self.item_map = IdMap(np.arange(len(self.factors)))
        self.user_map = IdMap(np.arange(1))

    def _fit(self, train, valid, on_epoch) -> None:
        raise TypeError("Factors is built with its factors, not trained")

    def item_factors(self) -> np.ndarray:
        return self.factors.copy()

    def fold_in(self, ratings) -> np.ndarray:
        items = np.array(list(ratings), dtype=np.int64)
        return self.factors[items].mean(axis=0) if len(items) else np.zeros(self.factors.shape[1], dtype=np.float32)

    def user_vector(self, user_repr) -> np.ndarray:
        return np.asarray(user_repr, dtype=np.float32)

    def score_folded(self, user_repr) -> torch.Tensor:
        return torch.from_numpy(self.factors @ np.asarray(user_repr, dtype=np.float32))

    def score_users(self, user_idx) -> torch.Tensor:
        return torch.zeros(len(user_idx), len(self.factors))

    def predict(self, user_idx, item_idx) -> np.ndarray:
        return np.zeros(len(np.asarray(item_idx)), dtype=np.float32)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"factors": torch.from_numpy(self.factors)}

    def _restore(self, state) -> None:
        self.factors = state["factors"].numpy()


def catalogue_for(popularity: np.ndarray, genres=None) -> pd.DataFrame:
    popularity = np.asarray(popularity, dtype=np.int64)
    n = len(popularity)
    items = np.repeat(np.arange(n), popularity)
    ratings = (items % 5 + 1).astype(np.float32)
    return make_catalogue(np.arange(n), [f"Film {i} (2000)" for i in range(n)], genres, items, ratings)


@pytest.fixture
def cloud():
    """40 items with 6-D factors stretched along a few directions; popularity 40 .. 1 in a shuffled order."""
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(40, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.3, 0.1]) + np.array([1.0, 0, 0, 0, 0, 0.5])
    popularity = rng.permutation(np.arange(1, 41))
    return Factors(factors), catalogue_for(popularity), factors, popularity


def test_projection_matches_an_svd_reference(cloud) -> None:
    model, catalogue, factors, popularity = cloud
    projection = project_items(model, catalogue, n_components=3, top_n=25)
    chosen = np.argsort(-popularity, kind="stable")[:25]
    assert projection.item_idx.tolist() == chosen.tolist()
    centred = factors[chosen].astype(np.float32).astype(np.float64)
    centred = centred - centred.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    ratio = s**2 / np.sum(s**2)
    np.testing.assert_allclose(projection.explained_variance_ratio, ratio[:3], rtol=1e-6)
    assert projection.explained_variance_ratio.sum() <= 1.0
    reference = u[:, :3] * s[:3]
    signs = np.sign(np.sum(projection.coords * reference, axis=0))  # PCA fixes signs its own way
    np.testing.assert_allclose(projection.coords, reference * signs, atol=1e-4)
    assert projection.coords.shape == (25, 3) and projection.coords.dtype == np.float32
    assert projection.item_scale == pytest.approx(np.sqrt(np.mean(np.sum(factors[chosen] ** 2, axis=1))), rel=1e-5)
    full = project_items(model, catalogue, n_components=2, top_n=None)
    assert len(full) == 40 and full.n_components == 2
    assert full.explained_variance_ratio.sum() <= 1.0


@pytest.mark.parametrize("n_components", [2, 3])
def test_large_projection_uses_the_covariance_and_equals_a_full_svd_pca(n_components) -> None:
    """Many items per dimension (the d x d covariance path) or fewer (the SVD path): the map is
    scikit-learn's exact full-SVD PCA: axes (same signs), mean, variance ratios, coordinates."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(5)
    n, d = 3000, 16
    factors = (rng.normal(size=(n, d)) * np.geomspace(4.0, 0.05, d) + rng.normal(size=d)).astype(np.float32)
    factors = factors @ np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)  # axes not along the coordinates
    popularity = rng.permutation(np.arange(1, n + 1))
    model, catalogue = Factors(factors), catalogue_for(popularity)
    for top_n in (None, 10 * d, 10 * d - 1):
        projection = project_items(model, catalogue, n_components=n_components, top_n=top_n)
        chosen = factors[projection.item_idx].astype(np.float64)
        reference = PCA(n_components=n_components, svd_solver="full").fit(chosen)
        np.testing.assert_allclose(projection.components, reference.components_, rtol=0, atol=1e-9)
        np.testing.assert_allclose(projection.mean, reference.mean_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(projection.explained_variance_ratio, reference.explained_variance_ratio_, rtol=1e-9)
        np.testing.assert_allclose(projection.coords, reference.transform(chosen), rtol=1e-5, atol=1e-5)


def test_projection_rejects_bad_arguments(cloud) -> None:
    model, catalogue, _, _ = cloud
    with pytest.raises(ValueError, match="n_components must be an integer from 1 to 6"):
        project_items(model, catalogue, n_components=7)
    with pytest.raises(ValueError, match="n_components"):
        project_items(model, catalogue, n_components=0)
    with pytest.raises(ValueError, match="top_n"):
        project_items(model, catalogue, top_n=1)
    with pytest.raises(ValueError, match="catalogue has 39 items"):
        project_items(model, catalogue.iloc[:39])
    for top_n in (None, 10):  # the covariance path (40 items >= 10 x 3 dims) and the SVD path
        for bad in (np.nan, np.inf):
            factors = np.ones((40, 3))
            factors[int(np.argmax(catalogue["popularity"].to_numpy())), 1] = bad  # the most rated item
            with pytest.raises(ValueError, match="NaN or infinite"):
                project_items(Factors(factors), catalogue, top_n=top_n)


def test_describe_components_names_the_extreme_items(cloud) -> None:
    model, catalogue, _, _ = cloud
    projection = project_items(model, catalogue, n_components=2, top_n=30)
    summaries = describe_components(projection, catalogue, n=4)
    assert [s.component for s in summaries] == [0, 1]
    for summary in summaries:
        coords = projection.coords[:, summary.component]
        lowest = projection.item_idx[np.argsort(coords)[:4]]
        highest = projection.item_idx[np.argsort(-coords)[:4]]
        assert summary.low_items == lowest.tolist() and summary.high_items == highest.tolist()
        assert summary.low_titles == [f"Film {i} (2000)" for i in lowest]
        assert summary.high_titles == [f"Film {i} (2000)" for i in highest]
        position = {item: row for row, item in enumerate(projection.item_idx.tolist())}
        assert coords[position[summary.low_items[0]]] == coords.min()
        assert coords[position[summary.high_items[0]]] == coords.max()
        assert summary.explained == pytest.approx(projection.explained_variance_ratio[summary.component])
    with pytest.raises(ValueError, match="n must be"):
        describe_components(projection, catalogue, n=0)


def test_project_vector_places_a_direction_at_the_item_scale(cloud) -> None:
    model, catalogue, _, _ = cloud
    projection = project_items(model, catalogue, n_components=2, top_n=40)
    w1, w2 = projection.components
    # A vector along the first axis lands on it, at the item cloud's RMS norm, whatever its length.
    for length in (0.01, 1.0, 250.0):
        np.testing.assert_allclose(project_vector(projection, length * w1), [projection.item_scale, 0.0], atol=1e-4)
    np.testing.assert_allclose(project_vector(projection, -3 * w2), [0.0, -projection.item_scale], atol=1e-4)
    # Hand-built: u = 3 w1 + 4 w2 (+ a part off the map) -> (3, 4) / 5 * scale, the off-map part shrinks it.
    off_map = np.linalg.svd(np.vstack([w1, w2]))[2][-1]  # orthogonal to both axes
    u = 3 * w1 + 4 * w2
    np.testing.assert_allclose(project_vector(projection, u), np.array([3, 4]) / 5 * projection.item_scale, atol=1e-4)
    placed = project_vector(projection, u + 5 * off_map)
    np.testing.assert_allclose(placed, np.array([3, 4]) / np.sqrt(50) * projection.item_scale, atol=1e-4)
    # For a vector in the map's plane, an item's score relative to the mean item is exactly its
    # coordinates dotted with the arrow (rescaled by |u| / scale): further along scores higher.
    coords = projection.coords.astype(np.float64)
    items = model.factors[projection.item_idx].astype(np.float64)
    centred_scores = (items - items.mean(axis=0)) @ u
    arrow = project_vector(projection, u) * (np.linalg.norm(u) / projection.item_scale)
    np.testing.assert_allclose(coords @ arrow, centred_scores, rtol=1e-4, atol=1e-4)
    assert project_vector(projection, np.zeros(6)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="6-dimensional"):
        project_vector(projection, np.ones(5))
    with pytest.raises(ValueError, match="no user vector"):
        project_vector(projection, None)
    with pytest.raises(ValueError, match="NaN"):
        project_vector(projection, np.full(6, np.nan))


def test_nearest_in_map_matches_brute_force(cloud) -> None:
    model, catalogue, _, _ = cloud
    projection = project_items(model, catalogue, n_components=2, top_n=20)
    point = np.array([0.5, -1.0])
    distance = np.sqrt(np.sum((projection.coords - point) ** 2, axis=1))
    assert nearest_in_map(projection, point, k=5).tolist() == projection.item_idx[np.argsort(distance, kind="stable")[:5]].tolist()
    with pytest.raises(ValueError, match="2 coordinates"):
        nearest_in_map(projection, np.zeros(3))


def test_colour_values() -> None:
    genres = [("Comedy", "Drama"), (), ("Western",)]
    catalogue = catalogue_for(np.array([9, 0, 99]), genres=genres)
    items = np.array([2, 0, 1])
    assert colour_values(catalogue, items, "genre").tolist() == ["Western", "Comedy", "(no genre)"]
    np.testing.assert_allclose(colour_values(catalogue, items, "popularity"), [2.0, 1.0, 0.0])
    means = colour_values(catalogue, items, "mean_rating")
    assert means[:2].tolist() == [3.0, 1.0] and np.isnan(means[2])  # item i is rated i % 5 + 1
    model = Factors(np.zeros((3, 2)), item_bias=np.array([0.5, -1.0, 2.0]))
    np.testing.assert_allclose(colour_values(catalogue, items, "bias", model), [2.0, 0.5, -1.0])
    with pytest.raises(ValueError, match="has no item biases"):
        colour_values(catalogue, items, "bias", Factors(np.zeros((3, 2))))
    with pytest.raises(ValueError, match="no model was given"):
        colour_values(catalogue, items, "bias")
    with pytest.raises(ValueError, match=str(COLOUR_BY).replace("(", r"\(").replace(")", r"\)")):
        colour_values(catalogue, items, "decade")


def test_item_biases_of_matrix_factorisation() -> None:
    from recengine.data.synthetic import checkerboard

    data = checkerboard(8, 8)
    model = create_model("mf", device="cpu", epochs=2, batch_size=16, embedding_dim=2, seed=0).fit(data)
    bias = item_biases(model)
    assert bias is not None and bias.shape == (8,) and bias.dtype == np.float64
    np.testing.assert_allclose(bias, model.network.item_bias.weight.detach().numpy()[:, 0], rtol=1e-6)
    assert item_biases(Factors(np.zeros((3, 2)))) is None

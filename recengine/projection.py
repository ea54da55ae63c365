"""The latent map: a 2-D (or 3-D) PCA of the model's item factors, and where a person sits on it.

`project_items` fits a PCA (scikit-learn's axes, computed from the d x d covariance) on the
item factors of the `top_n` most-rated items only (rarely rated items have factors shrunk
towards zero by regularisation and would crowd the centre and bend the axes), and places
those items. `describe_components` names each axis
by the titles at its two ends; `project_vector` places a person's folded-in vector
(`model.user_vector(model.fold_in(ratings))`) on the same axes; `colour_values` gives a
colour per point (first genre, popularity, mean rating or the model's item bias).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recengine.models.base import Recommender

__all__ = [
    "COLOUR_BY",
    "ComponentSummary",
    "ItemProjection",
    "colour_values",
    "describe_components",
    "item_biases",
    "nearest_in_map",
    "project_items",
    "project_vector",
]

#: What `colour_values` can colour the map by.
COLOUR_BY = ("genre", "popularity", "mean_rating", "bias")
#: `project_items` takes the PCA axes from the d x d covariance matrix once there are at least
#: this many items per factor dimension (scikit-learn's threshold for its `covariance_eigh`
#: solver); below it, from the SVD of the centred item factors.
_COVARIANCE_ROWS_PER_DIM = 10


@dataclass(frozen=True, eq=False)
class ItemProjection:
    """Items placed on the latent map.

    item_idx: (n,) int64 item indices, most-rated first; coords: (n, c) float32, row i the
    position of item_idx[i]; explained_variance_ratio: (c,) float64, share of the variance of
    the fitted items' factors along each axis (sums to at most 1); components: (c, d) float64,
    the unit axes in factor space (rows orthonormal, largest-magnitude loading positive, as
    scikit-learn's `PCA.components_`), so coords = (factors - mean) @ components.T; mean: (d,)
    float64, the fitted items' mean factor vector; item_scale: root-mean-square norm of the
    fitted items' factors, the length a user vector is scaled to by `project_vector`.
    """

    item_idx: np.ndarray
    coords: np.ndarray
    explained_variance_ratio: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    item_scale: float

    @property
    def n_components(self) -> int:
        return int(self.coords.shape[1])

    def __len__(self) -> int:
        return len(self.item_idx)


@dataclass(frozen=True)
class ComponentSummary:
    """One axis of the map: the titles at its low and high ends (most extreme first)."""

    component: int
    low_titles: list[str]
    high_titles: list[str]
    explained: float
    low_items: list[int]
    high_items: list[int]


def _most_rated(catalogue: pd.DataFrame, top_n: int | None) -> np.ndarray:
    """Indices of the `top_n` most-rated catalogue items (ties: lower index), all when None."""
    popularity = catalogue["popularity"].to_numpy()
    order = np.argsort(-popularity, kind="stable")
    return order if top_n is None else order[:top_n]


def project_items(model: Recommender, catalogue: pd.DataFrame, n_components: int = 2, top_n: int | None = 500) -> ItemProjection:
    """Fit a PCA on the factors of the `top_n` most-rated items (catalogue `popularity`; all
    items when None) and return their map coordinates.

    The PCA is exact and deterministic and gives scikit-learn's `PCA(svd_solver="full")`
    axes, signs (each axis's largest-magnitude loading positive), explained variance ratios
    and coordinates, up to rounding. With at least `_COVARIANCE_ROWS_PER_DIM` items per factor
    dimension the axes come from the eigendecomposition of the d x d covariance matrix
    (scikit-learn's `covariance_eigh`, O(n d²) with one pass over the factors: 90,000 x 64
    factors in about 50 ms of CPU where the SVD of the n x d matrix takes 0.5-0.75 s); fewer
    items (a few ms either way) use the SVD of the centred factors.
    """
    model._check_fitted()
    factors = np.asarray(model.item_factors())
    if factors.ndim != 2 or factors.shape[0] != len(catalogue):
        raise ValueError(
            f"model item factors have shape {factors.shape} but the catalogue has {len(catalogue)} items; "
            "pass the catalogue of the dataset the model was trained on"
        )
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, numbers.Integral) or top_n < 2):
        raise ValueError(f"top_n must be an integer of at least 2 or None (all items), got {top_n!r}")
    items = _most_rated(catalogue, None if top_n is None else int(top_n)).astype(np.int64)
    limit = min(len(items), factors.shape[1])
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral) or not 1 <= n_components <= limit:
        raise ValueError(
            f"n_components must be an integer from 1 to {limit} (the smaller of the number of items and "
            f"the factor dimension), got {n_components!r}; the map uses 2 or 3"
        )
    chosen = factors[items].astype(np.float64)
    components, variance, mean = _principal_axes(chosen, int(n_components))
    coords = chosen @ components.T - mean @ components.T
    return ItemProjection(
        item_idx=items,
        coords=coords.astype(np.float32),
        explained_variance_ratio=variance,
        components=components,
        mean=mean,
        item_scale=float(np.sqrt(np.vdot(chosen, chosen) / len(chosen))),
    )


def _principal_axes(x: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(components (c, d), explained variance ratios (c,), mean (d,)), all float64, of the
    rows of `x` (n, d) float64: the top `n_components` principal axes, signs as scikit-learn's
    `svd_flip(..., u_based_decision=False)` sets them (each axis's largest-|loading| positive).

    Many rows: the covariance C = (XᵀX - n m mᵀ) / (n - 1) and its eigendecomposition (eigh,
    ascending, so reversed), eigenvalues below 0 from rounding clipped to 0. Few rows: the
    SVD of the centred rows, variances s² / (n - 1). Ratios are over the total variance.
    ValueError when `x` holds NaN or infinite values.
    """
    n, d = x.shape
    mean = np.ones(n) @ x / n
    if n >= _COVARIANCE_ROWS_PER_DIM * d:
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite factors: reported just below
            covariance = x.T @ x
            covariance -= n * np.outer(mean, mean)
            covariance /= n - 1
        _check_finite(covariance)  # a NaN or infinity in column j of x makes C[j, j] one
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        variances = np.clip(eigenvalues[::-1], 0.0, None)
        axes = eigenvectors[:, ::-1].T
    else:
        _check_finite(x)
        singular = np.linalg.svd(x - mean, full_matrices=False)
        variances, axes = singular.S**2 / max(n - 1, 1), singular.Vh
    axes = axes[:n_components]
    largest = axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)]
    axes = axes * np.where(largest < 0, -1.0, 1.0)[:, None]
    total = variances.sum()
    ratios = variances[:n_components] / total if total > 0 else np.zeros(n_components)
    return np.ascontiguousarray(axes), ratios, mean


def _check_finite(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise ValueError("the model's item factors contain NaN or infinite values; retrain the model")


def project_vector(projection: ItemProjection, vector: np.ndarray | None) -> np.ndarray:
    """Map coordinates (c,) float32 of a person's vector ("you are here").

    User and item vectors live in the same dot-product space (score = u . v + biases), but not
    at the same scale and not around the same centre, so the point is placed as a *direction*:
    `u` is rescaled to the item cloud's root-mean-square norm (`projection.item_scale`) and
    projected onto the axes without subtracting the item mean, i.e. `coords = W (s u)`. Since an
    item's score is `u . mean + sum_k (u . w_k) * coord_k + (the part off the map)`, items lying
    further along the arrow from the origin to this point are the ones the model scores higher
    for the person; the point's distance from the origin shows how much of the person's
    taste lies in the plotted plane. It is not "the item the person most resembles".
    """
    if vector is None:
        raise ValueError("this model has no user vector to place on the map (model.user_vector returned None)")
    vector = np.asarray(vector, dtype=np.float64).reshape(-1)
    components = projection.components  # (c, d)
    if vector.shape[0] != components.shape[1]:
        raise ValueError(
            f"vector has {vector.shape[0]} values but the map was fitted on {components.shape[1]}-dimensional "
            "item factors; pass model.user_vector(model.fold_in(ratings)) from the same model"
        )
    if not np.all(np.isfinite(vector)):
        raise ValueError("vector contains NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        return np.zeros(components.shape[0], dtype=np.float32)
    return (components @ (vector * (projection.item_scale / norm))).astype(np.float32)


def describe_components(projection: ItemProjection, catalogue: pd.DataFrame, n: int = 5) -> list[ComponentSummary]:
    """For each axis, the `n` items with the lowest and the highest coordinate (most extreme first)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    titles = catalogue["display_title"].to_numpy()
    summaries = []
    for component in range(projection.n_components):
        order = np.argsort(projection.coords[:, component], kind="stable")
        low = projection.item_idx[order[: int(n)]]
        high = projection.item_idx[order[::-1][: int(n)]]
        summaries.append(
            ComponentSummary(
                component=component,
                low_titles=[str(t) for t in titles[low]],
                high_titles=[str(t) for t in titles[high]],
                explained=float(projection.explained_variance_ratio[component]),
                low_items=low.tolist(),
                high_items=high.tolist(),
            )
        )
    return summaries


def nearest_in_map(projection: ItemProjection, point: np.ndarray, k: int = 10) -> np.ndarray:
    """Item indices (k,) int64 of the mapped items closest (Euclidean, in map coordinates) to `point`."""
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    if point.shape[0] != projection.n_components:
        raise ValueError(f"point must have {projection.n_components} coordinates, got {point.shape[0]}")
    distance = np.linalg.norm(projection.coords.astype(np.float64) - point, axis=1)
    return projection.item_idx[np.argsort(distance, kind="stable")[: max(0, int(k))]]


def colour_values(catalogue: pd.DataFrame, item_idx: np.ndarray, by: str = "genre", model: Recommender | None = None) -> np.ndarray:
    """One colour value per item of `item_idx`, aligned with it.

    by="genre": the item's first listed genre (object array of str; "(no genre)" when none);
    "popularity": log10(1 + number of ratings) (float64); "mean_rating": the mean rating
    (float64, NaN when unrated); "bias": the model's learned item bias (float64, see
    `item_biases`), ValueError when the model has none.
    """
    if by not in COLOUR_BY:
        raise ValueError(f"by must be one of {COLOUR_BY}, got {by!r}")
    item_idx = np.asarray(item_idx, dtype=np.int64)
    if by == "genre":
        genres = catalogue["genres"].to_numpy()[item_idx]
        return np.array([g[0] if len(g) else "(no genre)" for g in genres], dtype=object)
    if by == "popularity":
        return np.log10(1.0 + catalogue["popularity"].to_numpy(dtype=np.float64)[item_idx])
    if by == "mean_rating":
        return catalogue["mean_rating"].to_numpy(dtype=np.float64)[item_idx]
    if model is None:
        raise ValueError("cannot colour by bias: no model was given; colour by 'genre', 'popularity' or 'mean_rating'")
    bias = item_biases(model)
    if bias is None:
        raise ValueError(f"cannot colour by bias: the {model.name} model has no item biases; colour by 'genre', 'popularity' or 'mean_rating'")
    if bias.shape[0] != len(catalogue):
        raise ValueError(f"model item bias has {bias.shape[0]} values for {len(catalogue)} catalogue items")
    return bias[item_idx]


def item_biases(model: Recommender) -> np.ndarray | None:
    """The model's learned item biases (n_items,) float64, or None when it has none.

    Looks for a public `item_bias` (an array, a tensor or a method returning one); failing
    that, for the bias table of a torch network at `model.network.item_bias` (an
    `nn.Embedding` of shape (n_items, 1), as in matrix factorisation, which exposes no public
    accessor yet).
    """
    bias = getattr(model, "item_bias", None)
    if callable(bias) and not isinstance(bias, torch.nn.Module):
        bias = bias()
    if bias is None:
        network = getattr(model, "network", None)
        bias = getattr(network, "item_bias", None) if network is not None else None
    if isinstance(bias, torch.nn.Embedding):
        bias = bias.weight
    if bias is None:
        return None
    if isinstance(bias, torch.Tensor):
        bias = bias.detach().to("cpu", torch.float64).numpy()
    return np.asarray(bias, dtype=np.float64).reshape(-1)

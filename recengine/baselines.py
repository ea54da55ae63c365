"""Reference baselines every model should beat: global mean, user + item biases, popularity.

They are not registered models (nothing to save or fold in) but share the scoring surface
the evaluation uses, so `recengine.evaluation.evaluate_model(baseline, train, test)` works:

- `fit(train) -> self`
- `predict(user_idx, item_idx) -> ndarray float32`: a rating (`explicit = True`) or a score.
- `score_users(user_idx) -> Tensor (n, n_items) float32` (CPU): scores of every item.
- `recommend(user_idx, k, exclude_seen=True) -> (item_idx int64, scores float32)`.

`Popularity` also scores next-item windows (`score_histories`) with the same vector for all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from recengine.data.dataset import Dataset
from recengine.models.base import NotFittedError, top_k

__all__ = ["BiasBaseline", "BiasBaselineConfig", "GlobalMean", "Popularity"]


class _Baseline:
    """Shared plumbing: fitted sizes, the training CSR for `recommend`, index checks."""

    name: ClassVar[str] = ""
    explicit: ClassVar[bool] = True

    def __init__(self) -> None:
        self.n_users = 0
        self.n_items = 0
        self.rating_scale: tuple[float, float] = (0.5, 5.0)
        self._seen_indptr: np.ndarray | None = None
        self._seen_items: np.ndarray | None = None

    def fit(self, train: Dataset) -> "_Baseline":
        """Learn from the training part; returns self."""
        if len(train) == 0:
            raise ValueError(f"cannot fit {self.name} on an empty dataset ({train!r})")
        self.n_users, self.n_items, self.rating_scale = train.n_users, train.n_items, tuple(train.rating_scale)
        self._seen_indptr, self._seen_items, _ = train.user_item_csr()
        self._fit(train)
        return self

    def _fit(self, train: Dataset) -> None:
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return self._seen_indptr is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{self.name} baseline is not fitted: call fit(train) first")

    def _check_indices(self, values: np.ndarray | torch.Tensor, size: int, label: str) -> np.ndarray:
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        index = np.asarray(values)
        if index.size and not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"{label} indices must be integers, got dtype {index.dtype}")
        index = index.astype(np.int64, copy=False).ravel()
        if index.size and (index.min() < 0 or index.max() >= size):
            raise IndexError(f"{label} indices must be in 0..{size - 1}, got values from {index.min()} to {index.max()}")
        return index

    def _pairs(self, user_idx, item_idx) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        users = self._check_indices(user_idx, self.n_users, "user")
        items = self._check_indices(item_idx, self.n_items, "item")
        if users.shape != items.shape:
            raise ValueError(f"user_idx and item_idx must have the same length, got {len(users)} and {len(items)}")
        return users, items

    def score_users(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Scores of all items for each user: Tensor (len(user_idx), n_items) float32 on CPU."""
        self._check_fitted()
        users = self._check_indices(user_idx, self.n_users, "user")
        return self._score_users(users)

    def _score_users(self, users: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def recommend(self, user_idx: int, k: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for a user: (item_idx int64, scores float32), best first, ties by lower index."""
        self._check_fitted()
        users = self._check_indices(np.array([user_idx]), self.n_users, "user")
        user = int(users[0])
        seen = self._seen_items[self._seen_indptr[user] : self._seen_indptr[user + 1]]
        exclude = torch.from_numpy(seen.astype(np.int64)) if exclude_seen else None
        return top_k(self._score_users(users)[0], k, exclude)

    def __repr__(self) -> str:
        state = f"{self.n_users} users x {self.n_items} items" if self.is_fitted else "unfitted"
        return f"<{type(self).__name__} ({state})>"


class GlobalMean(_Baseline):
    """Predicts the mean training rating for every pair; ranks every item equally.

    Under the evaluation's pessimistic ties a constant score ranks each relevant item after
    every other candidate, which is the honest figure for a model that knows nothing.
    """

    name = "global-mean"
    explicit = True

    def __init__(self) -> None:
        super().__init__()
        self.mean: float = float("nan")

    def _fit(self, train: Dataset) -> None:
        self.mean = float(np.mean(train.ratings, dtype=np.float64))

    def predict(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """The training mean for each pair: float32 (n,)."""
        users, _ = self._pairs(user_idx, item_idx)
        return np.full(len(users), self.mean, dtype=np.float32)

    def _score_users(self, users: np.ndarray) -> torch.Tensor:
        return torch.full((len(users), self.n_items), self.mean, dtype=torch.float32)


@dataclass(frozen=True)
class BiasBaselineConfig:
    """Hyper-parameters of `BiasBaseline` (defaults as Surprise's BaselineOnly ALS)."""

    #: Shrinkage of each user bias towards 0: b_u = sum(residual) / (reg_user + n_u).
    reg_user: float = 15.0
    #: Shrinkage of each item bias towards 0: b_i = sum(residual) / (reg_item + n_i).
    reg_item: float = 10.0
    #: Alternating sweeps (item biases, then user biases); a few are enough to converge.
    iterations: int = 10

    def __post_init__(self) -> None:
        for label in ("reg_user", "reg_item"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{label} must be a number >= 0, got {value!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {self.iterations!r}")


class BiasBaseline(_Baseline):
    """Regularised global mean + user bias + item bias (Koren's baseline predictor).

    Minimises sum (r - mu - b_u - b_i)^2 + reg_user * sum b_u^2 + reg_item * sum b_i^2 with
    mu the training mean, by exact alternating minimisation starting from b_u = 0:
        b_i = sum_{u rated i} (r - mu - b_u) / (reg_item + n_i)
        b_u = sum_{i rated by u} (r - mu - b_i) / (reg_user + n_u)
    repeated `iterations` times (vectorised with np.bincount). Users or items without
    training ratings keep a bias of 0. `predict` clips to the training data's rating scale;
    `score_users` does not (clipping would only add ties), so it ranks items by b_i.
    """

    name = "bias"
    explicit = True

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, iterations: int = 10) -> None:
        super().__init__()
        self.config = BiasBaselineConfig(reg_user=reg_user, reg_item=reg_item, iterations=iterations)
        self.mean: float = float("nan")
        self.user_bias = np.zeros(0, dtype=np.float64)
        self.item_bias = np.zeros(0, dtype=np.float64)

    def _fit(self, train: Dataset) -> None:
        users, items = train.users, train.items
        ratings = train.ratings.astype(np.float64)
        self.mean = float(ratings.mean())
        centred = ratings - self.mean
        user_count = np.bincount(users, minlength=self.n_users)
        item_count = np.bincount(items, minlength=self.n_items)
        user_bias = np.zeros(self.n_users, dtype=np.float64)
        item_bias = np.zeros(self.n_items, dtype=np.float64)
        for _ in range(self.config.iterations):
            item_sums = np.bincount(items, weights=centred - user_bias[users], minlength=self.n_items)
            item_bias = _shrunk_mean(item_sums, item_count, self.config.reg_item)
            user_sums = np.bincount(users, weights=centred - item_bias[items], minlength=self.n_users)
            user_bias = _shrunk_mean(user_sums, user_count, self.config.reg_user)
        self.user_bias, self.item_bias = user_bias, item_bias

    def predict(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """mu + b_u + b_i clipped to the rating scale: float32 (n,)."""
        users, items = self._pairs(user_idx, item_idx)
        low, high = self.rating_scale
        return np.clip(self.mean + self.user_bias[users] + self.item_bias[items], low, high).astype(np.float32)

    def _score_users(self, users: np.ndarray) -> torch.Tensor:
        scores = self.mean + self.user_bias[users][:, None] + self.item_bias[None, :]
        return torch.from_numpy(scores.astype(np.float32))


def _shrunk_mean(sums: np.ndarray, counts: np.ndarray, reg: float) -> np.ndarray:
    """sums / (reg + counts), and 0 where both are 0 (no ratings and no regularisation)."""
    denominator = reg + counts
    return np.divide(sums, denominator, out=np.zeros_like(sums), where=denominator > 0)


class Popularity(_Baseline):
    """Scores each item by its number of training interactions, the same for every user.

    `predict` returns that count (a score, not a rating: `explicit = False`); ties between
    equally popular items stay ties (the evaluation ranks them pessimistically, `recommend`
    by lower index).
    """

    name = "popularity"
    explicit = False

    def __init__(self) -> None:
        super().__init__()
        self.counts = np.zeros(0, dtype=np.int64)
        self._scores = torch.zeros(0)

    def _fit(self, train: Dataset) -> None:
        self.counts = train.item_popularity()
        self._scores = torch.from_numpy(self.counts.astype(np.float32))

    def predict(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Training count of each pair's item: float32 (n,)."""
        _, items = self._pairs(user_idx, item_idx)
        return self.counts[items].astype(np.float32)

    def _score_users(self, users: np.ndarray) -> torch.Tensor:
        return self._scores.repeat(len(users), 1)

    def score_histories(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Next-item scores for history windows (n, L): the popularity vector for every window,
        Tensor (n, n_items) float32; the windows' contents are not looked at."""
        self._check_fitted()
        if windows.ndim != 2:
            raise ValueError(f"windows must be a 2-D array (n_windows, max_length), got shape {tuple(windows.shape)}")
        return self._scores.repeat(len(windows), 1)

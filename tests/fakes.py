"""A test model with fixed item factors, shared by the onboarding and recommendation tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recengine.data.dataset import IdMap
from recengine.models.base import Recommender


@dataclass(frozen=True)
class NoConfig:
    """The fixed-factor test model has no hyper-parameters."""


class FixedFactors(Recommender):
    """score_i = bias_i + v_i . u with u = mean over rated j of (r_j - 3) v_j (a linear fold-in),
    or u = tanh(2 * that mean) with `squash` (a non-linear one, which cannot be explained exactly).

    With `exact`, `explain` returns the exact per-rating terms (r_j - 3)(v_j . v_i) / n.
    """

    name = "fixed-factors"
    Config = NoConfig

    def __init__(self, factors, bias=None, *, exact: bool = False, squash: bool = False, explicit: bool = True) -> None:
        super().__init__(NoConfig(), device="cpu")
        self.factors = np.asarray(factors, dtype=np.float64)
        self.bias = np.zeros(len(self.factors)) if bias is None else np.asarray(bias, dtype=np.float64)
        self.exact, self.squash, self.explicit = exact, squash, explicit
        self.item_map = IdMap(np.arange(len(self.factors)))
        self.user_map = IdMap(np.arange(1))
        self.fold_ins = 0

    def _fit(self, train, valid, on_epoch) -> None:
        raise TypeError("FixedFactors is built with its factors, not trained")

    def item_factors(self) -> np.ndarray:
        return self.factors.astype(np.float32)

    def fold_in(self, ratings) -> np.ndarray:
        self.fold_ins += 1
        if not ratings:
            return np.zeros(self.factors.shape[1])
        items = np.array(list(ratings), dtype=np.int64)
        centred = np.array([ratings[i] for i in items.tolist()]) - 3.0
        mean = centred @ self.factors[items] / len(items)
        return np.tanh(2.0 * mean) if self.squash else mean

    def score_folded(self, user_repr) -> torch.Tensor:
        return torch.from_numpy(self.bias + self.factors @ np.asarray(user_repr, dtype=np.float64)).float()

    def explain(self, ratings, item_idx):
        if not self.exact:
            return None
        terms = [(int(j), (float(r) - 3.0) * float(self.factors[j] @ self.factors[item_idx]) / len(ratings)) for j, r in ratings.items()]
        return sorted(terms, key=lambda term: (-term[1], term[0]))

    def score_users(self, user_idx) -> torch.Tensor:
        return self.score_folded(self.fold_in({})).expand(len(user_idx), -1)

    def predict(self, user_idx, item_idx) -> np.ndarray:
        return self.score_users(np.asarray(user_idx))[0].numpy()[np.asarray(item_idx)]

    def _state(self) -> dict[str, torch.Tensor]:
        return {"factors": torch.from_numpy(self.factors)}

    def _restore(self, state) -> None:
        self.factors = state["factors"].numpy()

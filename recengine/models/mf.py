"""Biased matrix factorisation for explicit ratings (Koren-style SVD trained with torch).

    x(u, i) = g + b_u + b_i + p_u . q_i                       (pre-activation score)
    r̂(u, i) = lo + (hi - lo) * sigmoid(x(u, i))               with use_sigmoid_range
    r̂(u, i) = x(u, i)                                          otherwise

where (lo, hi) = (scale_low - range_margin, scale_high + range_margin) is the rating scale widened
by a margin, as in fastai's `y_range`. Training (`recengine.training.train_loop`, AdamW with a
one-cycle schedule by default) minimises the squared error plus L2 on the embeddings and biases
actually looked up in each batch (`reg_factors`, `reg_bias`: frequent users and items are
penalised more often, which suits sparse data better than weight decay on every row) plus a
small uniform L2 on every factor row (`reg_uniform`).

Measured with the defaults (benchmarks/accuracy.py): RMSE 0.9155 on ml-100k u1, 0.9049 mean
over u1..u5, 0.8376 on ml-latest-small random 80/20; about 3 s to fit ml-100k on one CPU core.

Cost at scale: the uniform L2 and dense AdamW touch every factor row at every step, so a step
costs O((n_users + n_items) d) whatever its batch. The default `batch_size=0` therefore picks the
batch from the data (`automatic_batch_size`: 1024 below 102,500 training ratings, which covers
ml-100k and ml-latest-small, where the defaults were tuned and results are unchanged; above it
n_ratings // 100, i.e. about 100 steps per epoch), which makes an epoch cost about linear in the
ratings. Measured on benchmarks/scale.py's synthetic data with 1M ratings (6,039 x 3,706; 10%
held out; 15 epochs, 1 thread): batch 9,000 (automatic) held-out RMSE 0.5790 in 30.5 CPU s,
batch 2,250: 0.5823 in 63 s, batch 1,024: 0.5871 in 126 s; with 3M ratings (19,423 x 6,140):
batch 27,000 (automatic) 0.5779 in 92 CPU s, batch 6,750: 0.5811 in 160 s. Fewer, larger steps
lose nothing here (with the default 15 epochs; a run of one or two epochs has few steps).

A brand-new user is folded in by regularised least squares against the frozen item factors and
biases (see `MatrixFactorization.fold_in`), which makes their scores exactly linear in their
centred ratings, so `explain` can attribute every score to the ratings behind it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from recengine.data.dataset import Dataset
from recengine.models.base import (
    MAX_EMBEDDING_DIM,
    EpochCallback,
    NotFittedError,
    Recommender,
    check_range,
    register,
)
from recengine.training import automatic_batch_size, check_training_config, train_loop

__all__ = ["MFConfig", "MFNetwork", "MatrixFactorization", "automatic_batch_size"]

#: Fractions of the output range beyond which rating targets are clipped before the logit in fold-in.
_LOGIT_CLIP = 1e-3
#: Rated items x candidate items x (d + 1) values multiplied at once by `explain_many` (bounds memory).
_EXPLAIN_CHUNK = 1 << 22


@dataclass(frozen=True)
class MFConfig:
    """Hyper-parameters of biased matrix factorisation.

    The defaults are one set for every dataset, chosen by `benchmarks/tune_mf.py` on validation
    parts (10%) carved out of the training parts of ml-100k u1 and ml-latest-small's random 80/20
    split (mean validation RMSE 0.875: 0.905 and 0.845); the test parts were never used.
    """

    #: Length d of the user and item factor vectors.
    embedding_dim: int = 64
    #: Full passes over the training ratings.
    epochs: int = 15
    #: Ratings per optimiser step; 0 = automatic (`automatic_batch_size`): 1024 below 102,500
    #: training ratings (ml-100k, ml-latest-small: the tuned setting), then n_ratings // 100, so
    #: an epoch is about 100 steps and its cost grows linearly with the ratings (every step
    #: updates every factor row: the uniform L2 and dense AdamW). Measured: no loss of accuracy.
    batch_size: int = 0
    #: Peak learning rate (the schedule scales it).
    learning_rate: float = 0.005
    #: Optimiser weight decay on all parameters (decoupled for adamw); usually 0, see reg_*.
    weight_decay: float = 0.0
    #: L2 weight on the factors looked up in a batch: reg * mean(|p_u|^2 + |q_i|^2).
    reg_factors: float = 0.1
    #: L2 weight on the biases looked up in a batch: reg * mean(b_u^2 + b_i^2).
    reg_bias: float = 0.0
    #: L2 weight on every factor row, each user and each item alike:
    #: reg * (mean_u |p_u|^2 + mean_i |q_i|^2). Together with reg_factors this is the smoothed
    #: weighted trace norm (Salakhutdinov & Srebro, 2010): rows are penalised by a mix of their
    #: frequency and a uniform weight. Needs dense gradients (not with optimizer "sparse_adam").
    reg_uniform: float = 0.05
    #: Standard deviation of the normal initialisation of the factors (biases start at 0).
    init_std: float = 0.01
    #: Squash predictions into the widened rating scale with a scaled sigmoid.
    use_sigmoid_range: bool = True
    #: How far beyond the rating scale (on both ends) the sigmoid range reaches.
    range_margin: float = 0.75
    #: One of recengine.training.OPTIMIZERS.
    optimizer: str = "adamw"
    #: One of recengine.training.SCHEDULES.
    schedule: str = "one_cycle"
    #: Second-moment decay of the Adam-family optimisers (fastai's 0.99 suits embeddings).
    adam_beta2: float = 0.99
    #: Epochs without validation improvement before stopping (needs `valid`); 0 = off.
    early_stopping_patience: int = 0
    #: Ridge weight λ of the fold-in system for new users (on the pre-activation scale).
    fold_in_reg: float = 3.0
    #: Seeds the initial weights and the batch order.
    seed: int = 42

    def __post_init__(self) -> None:
        check_training_config(self, automatic_batch=True)
        if isinstance(self.embedding_dim, bool) or not isinstance(self.embedding_dim, int) or self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be an int >= 1, got {self.embedding_dim!r}")
        # upper bounds: beyond them a run never ends or cannot be allocated
        check_range("embedding_dim", self.embedding_dim, 1, MAX_EMBEDDING_DIM)
        for name in ("reg_factors", "reg_bias", "reg_uniform", "fold_in_reg", "range_margin"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.init_std, (int, float)) and math.isfinite(self.init_std) and self.init_std > 0):
            raise ValueError(f"init_std must be a finite number > 0, got {self.init_std!r}")
        if self.optimizer == "sparse_adam" and self.reg_uniform > 0:
            raise ValueError(
                f"reg_uniform={self.reg_uniform} touches every factor row each step, which optimizer 'sparse_adam' "
                "cannot do; set reg_uniform=0 or choose optimizer 'adam'/'adamw'"
            )
        if not isinstance(self.use_sigmoid_range, bool):
            raise ValueError(f"use_sigmoid_range must be True or False, got {self.use_sigmoid_range!r}")


class MFNetwork(nn.Module):
    """The factor tables; `forward(users, items)` gives pre-activation scores x(u, i).

    user_factors (n_users, d), item_factors (n_items, d), user_bias (n_users, 1),
    item_bias (n_items, 1), global_bias () — all float32.
    """

    def __init__(self, n_users: int, n_items: int, embedding_dim: int, sparse: bool = False) -> None:
        super().__init__()
        self.user_factors = nn.Embedding(n_users, embedding_dim, sparse=sparse)
        self.item_factors = nn.Embedding(n_items, embedding_dim, sparse=sparse)
        self.user_bias = nn.Embedding(n_users, 1, sparse=sparse)
        self.item_bias = nn.Embedding(n_items, 1, sparse=sparse)
        self.global_bias = nn.Parameter(torch.zeros(()))

    def reset(self, init_std: float, global_bias: float, generator: torch.Generator) -> None:
        """Seeded initialisation: factors ~ N(0, init_std²), biases 0, global bias as given."""
        with torch.no_grad():
            for table in (self.user_factors, self.item_factors):
                values = torch.randn(table.weight.shape, generator=generator) * init_std
                table.weight.copy_(values.to(table.weight.device))
            self.user_bias.weight.zero_()
            self.item_bias.weight.zero_()
            self.global_bias.fill_(global_bias)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users, items: int64 (n,) -> pre-activation scores float32 (n,)."""
        dot = (self.user_factors(users) * self.item_factors(items)).sum(dim=1)
        return dot + self.user_bias(users).squeeze(1) + self.item_bias(items).squeeze(1) + self.global_bias


@register
class MatrixFactorization(Recommender):
    """Biased matrix factorisation of explicit ratings; see the module docstring for the model."""

    name: ClassVar[str] = "mf"
    Config: ClassVar[type] = MFConfig
    explicit: ClassVar[bool] = True

    def __init__(self, config: MFConfig | None = None, device: str | torch.device = "auto") -> None:
        super().__init__(config, device)
        self.network: MFNetwork | None = None
        #: float64 host copies for fold-in and explain, made once per fitted/loaded network:
        #: ([q_i, 1] (n_items, d+1), g + b_i (n_items,)). Reset whenever `network` is replaced.
        self._host_tables: tuple[np.ndarray, np.ndarray] | None = None

    # --- output range -------------------------------------------------------------------------
    @property
    def output_range(self) -> tuple[float, float]:
        """(lo, hi) of the sigmoid range: the rating scale widened by `range_margin`."""
        low, high = self.rating_scale
        return float(low) - self.config.range_margin, float(high) + self.config.range_margin

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        if not self.config.use_sigmoid_range:
            return x
        lo, hi = self.output_range
        return lo + (hi - lo) * torch.sigmoid(x)

    def _to_pre_activation(self, ratings: np.ndarray) -> np.ndarray:
        """Ratings mapped to the pre-activation scale (the logit of the range fraction, clipped)."""
        if not self.config.use_sigmoid_range:
            return ratings.astype(np.float64)
        lo, hi = self.output_range
        fraction = np.clip((ratings.astype(np.float64) - lo) / (hi - lo), _LOGIT_CLIP, 1 - _LOGIT_CLIP)
        return np.log(fraction) - np.log1p(-fraction)

    # --- training -----------------------------------------------------------------------------
    def _fit(self, train: Dataset, valid: Dataset | None, on_epoch: EpochCallback) -> None:
        config: MFConfig = self.config
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        network = MFNetwork(train.n_users, train.n_items, config.embedding_dim, sparse=config.optimizer == "sparse_adam")
        network.to(self.device)
        mean_rating = float(np.mean(train.ratings))
        network.reset(config.init_std, float(self._to_pre_activation(np.array([mean_rating]))[0]), generator)
        self.network = None  # only a finished run is kept (a cancelled fit leaves no half-trained model)
        self._host_tables = None
        if config.batch_size == 0:
            config = dataclasses.replace(config, batch_size=automatic_batch_size(len(train)))

        users = torch.from_numpy(train.users.astype(np.int64)).to(self.device)
        items = torch.from_numpy(train.items.astype(np.int64)).to(self.device)
        ratings = torch.tensor(train.ratings, device=self.device)  # a copy: cached datasets are read-only

        def loss_fn(batch: tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
            batch_users, batch_items = batch
            user_vectors = network.user_factors(batch_users)
            item_vectors = network.item_factors(batch_items)
            user_bias = network.user_bias(batch_users).squeeze(1)
            item_bias = network.item_bias(batch_items).squeeze(1)
            x = (user_vectors * item_vectors).sum(dim=1) + user_bias + item_bias + network.global_bias
            error = torch.mean((self._activate(x) - target) ** 2)
            penalty = config.reg_factors * torch.mean((user_vectors**2).sum(1) + (item_vectors**2).sum(1))
            penalty = penalty + config.reg_bias * torch.mean(user_bias**2 + item_bias**2)
            if config.reg_uniform:
                every_row = (network.user_factors.weight**2).sum(1).mean() + (network.item_factors.weight**2).sum(1).mean()
                penalty = penalty + config.reg_uniform * every_row
            return error + penalty

        validate = None
        if valid is not None and len(valid):
            valid_users = torch.from_numpy(valid.users.astype(np.int64)).to(self.device)
            valid_items = torch.from_numpy(valid.items.astype(np.int64)).to(self.device)
            valid_ratings = torch.from_numpy(valid.ratings).to(self.device)
            low, high = self.rating_scale

            def validate() -> dict[str, float]:
                predicted = self._activate(network(valid_users, valid_items)).clamp(low, high)
                error = predicted - valid_ratings
                return {"rmse": float(torch.sqrt(torch.mean(error**2))), "mae": float(torch.mean(error.abs()))}

        train_loop(network, (users, items), ratings, loss_fn, config, on_epoch=on_epoch, validate=validate, monitor="rmse")
        self.network = network

    # --- scoring ------------------------------------------------------------------------------
    def _net(self) -> MFNetwork:
        if self.network is None or not self.is_fitted:
            raise NotFittedError(f"{self.name} model is not fitted: call fit(train) or Recommender.load(path) first")
        return self.network

    def predict(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Predicted ratings float32 (n,) for pairs of known indices, clipped to the rating scale."""
        network = self._net()
        users = np.asarray(user_idx, dtype=np.int64).reshape(-1)
        items = np.asarray(item_idx, dtype=np.int64).reshape(-1)
        if users.shape != items.shape:
            raise ValueError(f"user_idx and item_idx must have the same length, got {users.shape[0]} and {items.shape[0]}")
        self._check_indices(users, items)
        low, high = self.rating_scale
        with torch.no_grad():
            x = network(torch.from_numpy(users).to(self.device), torch.from_numpy(items).to(self.device))
            return self._activate(x).clamp(low, high).float().cpu().numpy()

    def score_users(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Predicted ratings of every item for known users: (len(user_idx), n_items) float32 on
        `device`, one matrix product. Not clipped to the scale (clipping would create ties)."""
        network = self._net()
        users = torch.as_tensor(user_idx, dtype=torch.long).reshape(-1)
        self._check_indices(users.cpu().numpy(), None)
        users = users.to(self.device)
        with torch.no_grad():
            x = network.user_factors.weight[users] @ network.item_factors.weight.T
            x += network.user_bias.weight[users] + network.item_bias.weight.T + network.global_bias
            return self._activate(x).float()

    def item_factors(self) -> np.ndarray:
        """Item factor vectors q_i: (n_items, d) float32."""
        return self._net().item_factors.weight.detach().float().cpu().numpy().copy()

    # --- new users ----------------------------------------------------------------------------
    def _item_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """([q_i, 1] (n_items, d+1) float64, g + b_i (n_items,) float64), copied from the network
        once and kept until the network is replaced (fit, load), so fold-in and explain cost
        O(rated items) instead of a copy of the whole item table per call. Read-only."""
        network = self._net()
        tables = self._host_tables
        if tables is None:
            q = network.item_factors.weight.detach().cpu().double().numpy()
            design = np.hstack([q, np.ones((q.shape[0], 1))])
            base = network.item_bias.weight.detach().cpu().double().numpy()[:, 0] + float(network.global_bias.detach())
            design.flags.writeable = False
            base.flags.writeable = False
            tables = self._host_tables = (design, base)
        return tables

    def _fold_in_system(self, ratings: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rated items int64 (m,), X (m, d+1) = [q_j, 1], A (d+1, d+1) = XᵀX + λI, y (m,) = t_j - base_j)."""
        all_design, all_base = self._item_tables()
        clean = self._validate_new_ratings(ratings)
        items = np.array(sorted(clean), dtype=np.int64)
        values = np.array([clean[i] for i in items.tolist()], dtype=np.float64)
        design = all_design[items]
        gram = design.T @ design + self.config.fold_in_reg * np.eye(design.shape[1])
        return items, design, gram, self._to_pre_activation(values) - all_base[items]

    def _item_baseline(self) -> np.ndarray:
        """g + b_i for every item: the pre-activation score of a user with zero vector and bias (float64)."""
        return self._item_tables()[1]

    def fold_in(self, ratings: Mapping[int, float]) -> np.ndarray:
        """A new user's [p_u; b_u] (d+1,) float32 from {item_idx: rating}, by ridge regression.

        With item factors q_j and baselines base_j = g + b_j frozen, solve

            min_u  Σ_j (t_j - base_j - [q_j; 1]ᵀ u)² + λ |u|²,   u = [p_u; b_u],  λ = fold_in_reg

        i.e. u = A⁻¹ Xᵀ (t - base) with A = XᵀX + λI. Targets t_j are the ratings on the
        pre-activation scale: with use_sigmoid_range, t_j = logit((r_j - lo) / (hi - lo)) with the
        fraction clipped to [1e-3, 1 - 1e-3]; otherwise t_j = r_j. No ratings give u = 0 (item
        baselines only).
        """
        items, design, gram, centred = self._fold_in_system(ratings)
        if len(items) == 0:
            return np.zeros(self.config.embedding_dim + 1, dtype=np.float32)
        return np.linalg.solve(gram, design.T @ centred).astype(np.float32)

    def _check_repr(self, user_repr: np.ndarray) -> np.ndarray:
        rep = np.asarray(user_repr, dtype=np.float32).reshape(-1)
        if rep.shape[0] != self.config.embedding_dim + 1:
            raise ValueError(
                f"a fold-in representation of this model has {self.config.embedding_dim + 1} values "
                f"(factors + bias), got {rep.shape[0]}; pass the result of fold_in"
            )
        return rep

    def score_folded(self, user_repr: np.ndarray) -> torch.Tensor:
        """Predicted ratings (n_items,) float32 on `device` for a `fold_in` representation (unclipped)."""
        network = self._net()
        rep = torch.from_numpy(self._check_repr(user_repr)).to(self.device)
        with torch.no_grad():
            x = network.item_factors.weight @ rep[:-1] + rep[-1] + network.item_bias.weight[:, 0] + network.global_bias
            return self._activate(x).float()

    def user_vector(self, user_repr: np.ndarray) -> np.ndarray:
        """The factor part p_u (d,) float32 of a fold-in representation, in the space of `item_factors()`."""
        self._check_fitted()
        return self._check_repr(user_repr)[:-1].copy()

    def explain(self, ratings: Mapping[int, float], item_idx: int) -> list[tuple[int, float]]:
        """Exact contribution of each rating to a new user's pre-activation score of `item_idx`.

        The fold-in is linear in the centred targets, so x_i - base_i = Σ_j c_j with
        c_j = [q_i; 1]ᵀ A⁻¹ [q_j; 1] (t_j - base_j). Returns [(rated_item_idx, c_j)] sorted by
        contribution, largest (most positive) first; ties by item index. The contributions sum to
        the folded user's pre-activation score of `item_idx` minus the item-only baseline g + b_i.
        The same as `explain_many(ratings, [item_idx])[0]`.
        """
        self._check_fitted()
        return self.explain_many(ratings, np.array([int(item_idx)], dtype=np.int64))[0]

    def explain_many(self, ratings: Mapping[int, float], item_idx: np.ndarray) -> list[list[tuple[int, float]]]:
        """`explain(ratings, i)` for every item i of `item_idx` ((n,) int), aligned with it, from one
        solve: W = A⁻¹ Xᵀ (d+1, m) once, then c_ij = ([q_i; 1] · W[:, j]) (t_j - base_j) for all
        candidates i. Entry k equals `explain(ratings, item_idx[k])` exactly (explain is this method
        with one item; each product is summed over the d+1 factors in the same order whatever the
        number of items). Cost O(d² m + n m d) instead of n solves and n copies of the item table.
        """
        self._check_fitted()
        wanted = np.asarray(item_idx)
        if wanted.dtype.kind not in "iu":
            raise TypeError(f"item_idx must hold integer item indices, got dtype {wanted.dtype}")
        wanted = wanted.astype(np.int64).reshape(-1)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= self.n_items):
            bad = int(wanted[(wanted < 0) | (wanted >= self.n_items)][0])
            raise IndexError(f"item index {bad} out of range 0..{self.n_items - 1}")
        items, design, gram, centred = self._fold_in_system(ratings)
        if len(items) == 0:
            return [[] for _ in range(len(wanted))]
        solved = np.ascontiguousarray(np.linalg.solve(gram, design.T).T)  # (m, d+1): row j = A⁻¹ [q_j; 1]
        candidates = self._item_tables()[0][wanted]  # (n, d+1)
        chunk = max(1, _EXPLAIN_CHUNK // solved.size)
        explanations: list[list[tuple[int, float]]] = []
        for start in range(0, len(wanted), chunk):
            block = candidates[start : start + chunk]
            # (b, m): elementwise product and a sum over the last axis, so every entry is summed
            # alike for any b (a matrix product may block differently for one row and for many).
            weights = (block[:, None, :] * solved[None, :, :]).sum(axis=2)
            for contributions in weights * centred[None, :]:
                order = np.lexsort((items, -contributions))
                explanations.append([(int(items[j]), float(contributions[j])) for j in order])
        return explanations

    # --- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        network = self._net()
        return {
            "user_factors": network.user_factors.weight,
            "item_factors": network.item_factors.weight,
            "user_bias": network.user_bias.weight,
            "item_bias": network.item_bias.weight,
            "global_bias": network.global_bias,
        }

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        n_users, dim = state["user_factors"].shape
        n_items = state["item_factors"].shape[0]
        if dim != self.config.embedding_dim:
            raise ValueError(f"weights have embedding_dim {dim}, config says {self.config.embedding_dim}")
        network = MFNetwork(n_users, n_items, dim, sparse=self.config.optimizer == "sparse_adam").to(self.device)
        with torch.no_grad():
            network.user_factors.weight.copy_(state["user_factors"])
            network.item_factors.weight.copy_(state["item_factors"])
            network.user_bias.weight.copy_(state["user_bias"])
            network.item_bias.weight.copy_(state["item_bias"])
            network.global_bias.copy_(state["global_bias"])
        network.eval()
        self.network = network
        self._host_tables = None

"""Neural collaborative filtering for explicit ratings: embeddings into an MLP, optionally fused
with a dot-product branch (NeuMF, He et al. 2017), trained with torch.

    m(u, i) = MLP(W_u e_u + W_i e_i + c)                       (the MLP of [e_u; e_i])
    x(u, i) = g + b_u + b_i + m(u, i)                          fusion="mlp"
    x(u, i) = g + b_u + b_i + m(u, i) + p_u . q_i              fusion="neumf"
    r̂(u, i) = lo + (hi - lo) * sigmoid(x(u, i))

e_u, e_i (MLP embeddings) and p_u, q_i (the generalised-matrix-factorisation, "GMF", vectors) are
separate tables of length `embedding_dim`; b_u, b_i, g are biases (with `use_biases`). The MLP
takes the concatenation [e_u; e_i], written as W_u e_u + W_i e_i + c for its first layer, then
`hidden` widths with `activation` and `dropout` after each, then a linear output to one number.
NeuMF's final layer h·[p_u ⊙ q_i; MLP output] is the sum above: the weights h of the GMF half
are absorbed into p_u. (lo, hi) is the rating scale widened by `range_margin`, as in fastai's
`y_range`. Training (`recengine.training.train_loop`) minimises the squared error plus L2 on the
embeddings looked up in each batch (`reg_embeddings`, `reg_bias`), a small L2 on every embedding
row (`reg_uniform`) and the optimiser's weight decay. Dropout draws its masks from a
`torch.Generator` seeded with `seed`, so a fit is reproducible on CPU.

With `implicit_feedback` (the default) a user's e_u and p_u each also get |N(u)|^-½ Σ_j y_j over
the items N(u) they rated (SVD++, Koren 2008), from two more item tables. N(u) is capped at
`implicit_max_items` items (a fixed seeded subset, the same for every epoch and for prediction;
exact for users with fewer ratings), so an epoch costs at most that many table rows per rating,
linear in the ratings; uncapped, every batch re-summed the whole history of each of its users
(73 table rows per rating at 100k ratings, 354 at 1M). The padded item table is built once per
fit, so a CUDA step has no host-device synchronisation. With `item_implicit_feedback` (the
default) the item side gets the mirror image: e_i and q_i each also get |M(i)|^-½ Σ_v z_v over
the users M(i) who rated item i (capped at `item_implicit_max_users`), from two user tables.

In training, the rating being predicted is left out of its own user's and item's sums
(`implicit_leave_target_out`): a held-out rating is in neither, and with it left in, the sums
let a training rating partly predict itself.

Measured with the defaults (benchmarks/accuracy.py --quick, two CPU threads): RMSE 0.8980 on
ml-100k u1 (target 0.915; MF 0.9155) and 0.8934 on ml-100k random 80/20 seed 42 (target 0.895;
MF 0.9080), fits of 22-26 s. Every default was chosen on validation parts carved out of the
training parts (benchmarks/tune_neural.py; the test parts were never read); validation RMSE on
the random split / u1, step by step:

    NeuMF with user-side implicit feedback, dim 64, cap 64          0.9051 / 0.9028
    + item-side implicit feedback (cap 128 raters)                  0.9010 / 0.8980
    + the target left out of its own sums                           0.8999 / 0.8963
    + user-side cap 128                                             0.8985 / 0.8949
    + embedding_dim 128 with reg_uniform 0.1                        0.8949 / 0.8943
    + reg_embeddings 0.08                                           0.8940 / 0.8903

Tried on the way without a gain (random split's validation part, against the step before):
per-rating-level implicit tables, one vector per (item, rating level) with 2, 3 or 5 levels
(0.9018-0.9056, even with the target left out), weighting the implicit sum by the centred
rating (0.9071), embedding_dim 96 (0.8979) or 256 with reg_uniform 0.2 (0.9014), reg_uniform
0.15 (0.8970), reg_embeddings 0.06 / 0.07 / 0.09 / 0.15 (0.8953 / 0.8944 / 0.8952 / 0.9089),
hidden (32,) (0.8982), 8 or 12 epochs (0.8961 / 0.8968), learning rate 0.004 or 0.007 (0.8959 /
0.9013), an uncapped user side or 256 raters per item (0.8979 / 0.8964); earlier, at dim 64, the MLP
alone (fusion "mlp", 0.927), wider MLPs with or without dropout (0.910-0.915), weight decay,
range_margin 0.5 and batches of 2048.

A brand-new user is folded in by optimising a fresh [e_u; p_u; b_u] against the frozen network
(see `NeuralRecommender.fold_in`; about 0.1 s for 10 or 20 ratings on a loaded CPU); `explain`
attributes a score to the ratings by leave-one-out re-folding (about 0.1 s for 20 ratings, then
cached for the profile).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Mapping, NamedTuple

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
    clip_repr,
    register,
)
from recengine.training import automatic_batch_size, check_training_config, train_loop

__all__ = ["ACTIVATIONS", "Bags", "FUSIONS", "NeuralConfig", "NeuralNetwork", "NeuralRecommender", "Side", "implicit_item_table"]

#: How the MLP is combined with a dot product of user and item vectors.
FUSIONS = ("mlp", "neumf")
#: Activation functions of the hidden layers.
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
_ACTIVATION_FUNCTIONS = {
    "relu": torch.relu,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
    "tanh": torch.tanh,
}
#: Bound on (users x items x width) float32 activations built at once by `score_users` (64 MiB).
_GRID_ELEMENTS = 1 << 24
#: Profiles whose leave-one-out fold-ins `explain` keeps, most recent first.
_EXPLAIN_CACHE_SIZE = 8
#: Bounds of the network's shape and of the fold-in's optimiser steps.
MAX_HIDDEN_LAYERS = 16
MAX_HIDDEN_WIDTH = 8192
MAX_FOLD_IN_STEPS = 10_000
MAX_IMPLICIT_ITEMS = 1_000_000


@dataclass(frozen=True)
class NeuralConfig:
    """Hyper-parameters of the neural model (embeddings + MLP, optionally NeuMF).

    The optimiser settings are MF's tuned defaults (benchmarks/tune_mf.py); the rest was chosen
    with `benchmarks/tune_neural.py` on validation parts carved out of the training parts of
    ml-100k's random 80/20 split and fold u1 (the module docstring has the steps and figures);
    the test parts were never used. fold_in_reg was chosen on the random split's validation part
    by folding in 120 users from 5 or 10 of their ratings (at embedding_dim 64: validation RMSE
    1.044 / 1.012 at 10, against 1.055 / 1.018 at 3 and 1.040 / 1.013 at 30; MF's fold-in:
    1.048 / 1.010; the mean user alone: 1.087).
    """

    #: One of FUSIONS: "mlp" (MLP of the embeddings only) or "neumf" (MLP plus a dot-product branch).
    fusion: str = "neumf"
    #: Length of each embedding (the MLP's user and item embeddings, and the dot-product vectors).
    embedding_dim: int = 128
    #: Widths of the MLP's hidden layers, first to last (at least one).
    hidden: tuple[int, ...] = (16,)
    #: One of ACTIVATIONS, used after every hidden layer.
    activation: str = "relu"
    #: Dropout probability after every hidden layer during training (0 = off).
    dropout: float = 0.0
    #: Learn a user bias, an item bias and a global bias (the global bias is always learned).
    use_biases: bool = True
    #: Add to a user's vectors |N(u)|^-½ Σ_{j in N(u)} y_j over the items N(u) they rated (SVD++'s
    #: implicit feedback, Koren 2008), with a table y for the MLP branch and one for the dot product.
    implicit_feedback: bool = True
    #: At most this many rated items per user enter the implicit-feedback sum (a fixed subset drawn
    #: with `seed`; exact for users with fewer ratings), so an epoch costs at most this many table
    #: rows per rating: linear in the ratings.
    implicit_max_items: int = 128
    #: Add to an item's vectors |M(i)|^-½ Σ_{v in M(i)} z_v over the users M(i) who rated it (the
    #: mirror image of `implicit_feedback`), with a user table z for the MLP branch and one for the
    #: dot product. Validation RMSE (benchmarks/tune_neural.py, random 80/20 / u1 validation parts):
    #: 0.9010 / 0.8980 at a cap of 128 users, against 0.9051 / 0.9028 without (a scratch prototype:
    #: 0.9011 / 0.8976 at 256 or uncapped, 0.9028 random at 32; seed 7: 0.8997 against 0.9042).
    item_implicit_feedback: bool = True
    #: At most this many raters per item enter the item-side sum (a fixed seeded subset).
    item_implicit_max_users: int = 128
    #: In training, leave the rating being predicted out of its user's and its item's implicit-feedback
    #: sums, as a held-out rating always is (it is in neither). Validation RMSE (random 80/20 / u1
    #: validation parts): 0.8999 / 0.8963 against 0.9010 / 0.8980 with it left in.
    implicit_leave_target_out: bool = True
    #: Full passes over the training ratings.
    epochs: int = 10
    #: Ratings per optimiser step; 0 = automatic (`recengine.training.automatic_batch_size`): 1024
    #: below 102,500 training ratings, else about 100 steps per epoch, so an epoch costs about linear
    #: in the ratings (every step updates whole embedding tables).
    batch_size: int = 0
    #: Peak learning rate (the schedule scales it).
    learning_rate: float = 0.005
    #: Optimiser weight decay on all parameters (decoupled for adamw).
    weight_decay: float = 0.0
    #: L2 weight on the vectors looked up in a batch: reg * mean(|e_u|² + |e_i|² + |p_u|² + |q_i|²),
    #: a user's vector including its implicit-feedback sum.
    reg_embeddings: float = 0.08
    #: L2 weight on the biases looked up in a batch: reg * mean(b_u² + b_i²).
    reg_bias: float = 0.0
    #: L2 weight on every embedding row alike: reg * Σ_tables mean_rows |row|².
    #: Needs dense gradients (not with optimizer "sparse_adam").
    reg_uniform: float = 0.1
    #: Standard deviation of the normal initialisation of the embeddings (biases start at 0).
    init_std: float = 0.01
    #: How far beyond the rating scale (on both ends) the sigmoid output range reaches.
    range_margin: float = 0.75
    #: One of recengine.training.OPTIMIZERS.
    optimizer: str = "adamw"
    #: One of recengine.training.SCHEDULES.
    schedule: str = "one_cycle"
    #: Second-moment decay of the Adam-family optimisers.
    adam_beta2: float = 0.99
    #: Epochs without validation improvement before stopping (needs `valid`); 0 = off.
    early_stopping_patience: int = 0
    #: Weight λ of the pull of a new user's parameters toward the mean trained user in fold-in.
    fold_in_reg: float = 10.0
    #: Optimiser steps of the fold-in of a new user.
    fold_in_steps: int = 100
    #: Peak learning rate of the fold-in's Adam steps (cosine-decayed to 0).
    fold_in_learning_rate: float = 0.05
    #: Seeds the initial weights, the batch order and the dropout masks.
    seed: int = 42

    def __post_init__(self) -> None:
        check_training_config(self, automatic_batch=True)
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        check_range("embedding_dim", self.embedding_dim, 1, MAX_EMBEDDING_DIM)
        check_range("fold_in_steps", self.fold_in_steps, 1, MAX_FOLD_IN_STEPS)
        check_range("implicit_max_items", self.implicit_max_items, 1, MAX_IMPLICIT_ITEMS)
        check_range("item_implicit_max_users", self.item_implicit_max_users, 1, MAX_IMPLICIT_ITEMS)
        def is_width(width: object) -> bool:
            return isinstance(width, int) and not isinstance(width, bool) and 1 <= width <= MAX_HIDDEN_WIDTH

        if not isinstance(self.hidden, tuple) or not 1 <= len(self.hidden) <= MAX_HIDDEN_LAYERS or not all(map(is_width, self.hidden)):
            raise ValueError(
                f"hidden must be a tuple of 1 to {MAX_HIDDEN_LAYERS} layer widths, each an int from 1 to {MAX_HIDDEN_WIDTH:,} "
                f"(e.g. (64, 32)), got {clip_repr(self.hidden)}"
            )
        if not (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        for name in ("reg_embeddings", "reg_bias", "reg_uniform", "fold_in_reg", "range_margin"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("init_std", "fold_in_learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("use_biases", "implicit_feedback", "item_implicit_feedback", "implicit_leave_target_out"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.optimizer == "sparse_adam" and self.reg_uniform > 0:
            raise ValueError(
                f"reg_uniform={self.reg_uniform} touches every embedding row each step, which optimizer 'sparse_adam' "
                "cannot do; set reg_uniform=0 or choose optimizer 'adam'/'adamw'"
            )


class Side(NamedTuple):
    """The parameters of some users (or items) the score is built from, rows aligned:
    mlp (n, d) MLP embeddings, gmf (n, d) dot-product vectors or None (fusion "mlp"),
    bias (n,) or None (without biases). All float32."""

    mlp: torch.Tensor
    gmf: torch.Tensor | None
    bias: torch.Tensor | None


class Bags(NamedTuple):
    """The implicit-feedback items N(u) of n users with weights |N(u)|^-½ (float32), in one of two
    layouts: flattened, items int64 (total,), offsets int64 (n,) where each user's items start,
    weights (total,); or padded, items int64 (n, c), offsets None, weights (n, c), the padding
    being item 0 with weight 0 (no host-device sync to build, for CUDA)."""

    items: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor


class NeuralNetwork(nn.Module):
    """Embedding tables and the MLP; `pair_scores` / `grid_scores` give pre-activation scores x.

    user_embedding (n_users, d), item_embedding (n_items, d); with fusion "neumf" also user_gmf
    and item_gmf (·, d); with implicit feedback implicit (n_items, d) for the MLP branch and, with
    "neumf", implicit_gmf (n_items, d) for the dot product; with biases user_bias (n_users, 1) and
    item_bias (n_items, 1); always a global_bias (). MLP: user_in (d -> h0, no bias), item_in
    (d -> h0), hidden_layers (h_{k-1} -> h_k), output (h_last -> 1, no bias). All float32.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int,
        hidden: tuple[int, ...],
        activation: str = "relu",
        dropout: float = 0.0,
        fusion: str = "neumf",
        use_biases: bool = True,
        implicit_feedback: bool = False,
        sparse: bool = False,
        item_implicit_feedback: bool = False,
    ) -> None:
        super().__init__()
        self.activation = _ACTIVATION_FUNCTIONS[activation]
        self.dropout = float(dropout)
        self.user_embedding = nn.Embedding(n_users, embedding_dim, sparse=sparse)
        self.item_embedding = nn.Embedding(n_items, embedding_dim, sparse=sparse)
        gmf = fusion == "neumf"
        self.user_gmf = nn.Embedding(n_users, embedding_dim, sparse=sparse) if gmf else None
        self.item_gmf = nn.Embedding(n_items, embedding_dim, sparse=sparse) if gmf else None
        self.implicit = nn.Embedding(n_items, embedding_dim, sparse=sparse) if implicit_feedback else None
        self.implicit_gmf = nn.Embedding(n_items, embedding_dim, sparse=sparse) if implicit_feedback and gmf else None
        self.item_implicit = nn.Embedding(n_users, embedding_dim, sparse=sparse) if item_implicit_feedback else None
        self.item_implicit_gmf = nn.Embedding(n_users, embedding_dim, sparse=sparse) if item_implicit_feedback and gmf else None
        self.user_bias = nn.Embedding(n_users, 1, sparse=sparse) if use_biases else None
        self.item_bias = nn.Embedding(n_items, 1, sparse=sparse) if use_biases else None
        self.global_bias = nn.Parameter(torch.zeros(()))
        self.user_in = nn.Linear(embedding_dim, hidden[0], bias=False)
        self.item_in = nn.Linear(embedding_dim, hidden[0])
        self.hidden_layers = nn.ModuleList(nn.Linear(width_in, width_out) for width_in, width_out in zip(hidden, hidden[1:]))
        self.output = nn.Linear(hidden[-1], 1, bias=False)

    def embedding_tables(self) -> list[nn.Embedding]:
        """The user and item vector tables (not the biases)."""
        tables = (
            self.user_embedding, self.item_embedding, self.user_gmf, self.item_gmf,
            self.implicit, self.implicit_gmf, self.item_implicit, self.item_implicit_gmf,
        )
        return [t for t in tables if t is not None]

    def reset(self, init_std: float, global_bias: float, generator: torch.Generator) -> None:
        """Seeded initialisation: embeddings ~ N(0, init_std²), biases 0, global bias as given, and
        every linear layer ~ U(-1/√fan_in, 1/√fan_in) (torch's default range, from `generator`)."""
        with torch.no_grad():
            for table in self.embedding_tables():
                table.weight.copy_(torch.randn(table.weight.shape, generator=generator) * init_std)
            for table in (self.user_bias, self.item_bias):
                if table is not None:
                    table.weight.zero_()
            self.global_bias.fill_(global_bias)
            for layer in (self.user_in, self.item_in, *self.hidden_layers, self.output):
                first_layer = layer is self.user_in or layer is self.item_in  # sees [e_u; e_i]: fan-in 2d
                bound = 1.0 / math.sqrt(layer.in_features * (2 if first_layer else 1))
                for parameter in layer.parameters():
                    parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound)

    # --- the two sides --------------------------------------------------------------------------
    def user_side(self, users: torch.Tensor, bags: Bags | None = None) -> Side:
        """Parameters of users int64 (n,) looked up (through the modules, for sparse gradients),
        plus the implicit-feedback sums of their rated items `bags` when given."""
        mlp = self.user_embedding(users)
        gmf = self.user_gmf(users) if self.user_gmf is not None else None
        if bags is not None and self.implicit is not None:
            mlp, gmf = self._add_sums(mlp, gmf, self.implicit_sums(bags))
        return Side(mlp, gmf, self.user_bias(users).squeeze(1) if self.user_bias is not None else None)

    @staticmethod
    def _add_sums(mlp: torch.Tensor, gmf: torch.Tensor | None, sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        d = mlp.shape[1]
        return mlp + sums[:, :d], None if gmf is None else gmf + sums[:, d:]

    def implicit_sums(self, bags: Bags, item_side: bool = False) -> torch.Tensor:
        """Implicit-feedback vectors Σ_j w_j y_j of n users whose items are `bags`: (n, d) float32
        from `implicit`, or (n, 2d) [MLP sums | dot-product sums] with fusion "neumf". With
        `item_side` the same for n items whose raters are `bags`, from `item_implicit` (and
        `item_implicit_gmf`). The tables are summed side by side in one pass (one index sort
        instead of two; about twice as fast) unless their gradients must stay sparse."""
        pair = (self.item_implicit, self.item_implicit_gmf) if item_side else (self.implicit, self.implicit_gmf)
        tables = [table for table in pair if table is not None]
        if tables[0].sparse:
            return torch.cat([self._bag_sum(bags, table.weight, sparse=True) for table in tables], dim=1)
        return self._bag_sum(bags, torch.cat([table.weight for table in tables], dim=1), sparse=False)

    @staticmethod
    def _bag_sum(bags: Bags, weight: torch.Tensor, sparse: bool) -> torch.Tensor:
        return nn.functional.embedding_bag(
            bags.items, weight, bags.offsets, mode="sum", per_sample_weights=bags.weights, sparse=sparse
        )

    def without_own(self, side: Side, entries: torch.Tensor, weights: torch.Tensor, item_side: bool = False) -> Side:
        """`side` (n rows) less one weighted implicit-feedback entry per row: the user-side vectors
        less weights[k] · y_{entries[k]} (item tables), or with `item_side` the item-side vectors
        less weights[k] · z_{entries[k]} (user tables). entries int64 (n,), weights float32 (n,), 0
        where the entry is not in the row's sum."""
        own = self.implicit_sums(Bags(entries[:, None], None, weights[:, None]), item_side)
        mlp, gmf = self._add_sums(side.mlp, side.gmf, -own)
        return Side(mlp, gmf, side.bias)

    def item_side(self, items: torch.Tensor, bags: Bags | None = None) -> Side:
        """Parameters of items int64 (n,), plus the item-side implicit-feedback sums of their
        raters `bags` when given."""
        mlp = self.item_embedding(items)
        gmf = self.item_gmf(items) if self.item_gmf is not None else None
        if bags is not None and self.item_implicit is not None:
            mlp, gmf = self._add_sums(mlp, gmf, self.implicit_sums(bags, item_side=True))
        return Side(mlp, gmf, self.item_bias(items).squeeze(1) if self.item_bias is not None else None)

    # --- scores ---------------------------------------------------------------------------------
    def _mlp(self, first: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """MLP from the first layer's pre-activation (..., h0) to its output (...)."""
        hidden = self._drop(self.activation(first), generator)
        for layer in self.hidden_layers:
            hidden = self._drop(self.activation(layer(hidden)), generator)
        return self.output(hidden).squeeze(-1)

    def _drop(self, values: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.training or self.dropout == 0:
            return values
        keep = torch.rand(values.shape, generator=generator, device=values.device) >= self.dropout
        return values * keep / (1.0 - self.dropout)

    def pair_scores(self, users: Side, items: Side, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pre-activation x for aligned rows (n users, n items) -> (n,) float32. Dropout (in
        training mode) draws its masks from `generator`."""
        x = self._mlp(self.user_in(users.mlp) + self.item_in(items.mlp), generator) + self.global_bias
        if users.gmf is not None:
            x = x + (users.gmf * items.gmf).sum(dim=-1)
        if users.bias is not None:
            x = x + users.bias + items.bias
        return x

    def grid_scores(self, users: Side, items: Side) -> torch.Tensor:
        """Pre-activation x of every user (P rows) with every item (m rows) -> (P, m) float32,
        without dropout. Builds a (P, m, h0) activation: callers bound P * m."""
        first = self.user_in(users.mlp)[:, None, :] + self.item_in(items.mlp)[None, :, :]
        x = self._mlp(first, None) + self.global_bias
        if users.gmf is not None:
            x = x + users.gmf @ items.gmf.T
        if users.bias is not None:
            x = x + users.bias[:, None] + items.bias[None, :]
        return x

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, bags: Bags | None = None, item_bags: Bags | None = None
    ) -> torch.Tensor:
        """users, items: int64 (n,) -> pre-activation scores float32 (n,); `bags`: the users'
        rated items for the implicit-feedback branch, `item_bags`: the items' raters for the
        item-side one (each ignored without its branch)."""
        return self.pair_scores(self.user_side(users, bags), self.item_side(items, item_bags))


def implicit_item_table(indptr: np.ndarray, items: np.ndarray, max_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's implicit-feedback items N(u), padded: (items int64 (n_users, c), weights float32
    (n_users, c)), c = min(max_items, longest row) (at least 1).

    indptr int64 (n_users + 1,), items (nnz,): the users' rated items as CSR rows. N(u) is the
    whole row when it has at most `max_items` items, else `max_items` of them drawn without
    replacement (a random key per entry from `np.random.default_rng(seed)`, the smallest keys
    kept); each row lists N(u) in ascending item order, then padding (item 0, weight 0). The
    weight of every entry of N(u) is |N(u)|^-½.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n_users = len(indptr) - 1
    lengths = np.diff(indptr)
    owner = np.repeat(np.arange(n_users), lengths)
    keys = np.random.default_rng(seed).random(len(items))
    by_key = np.lexsort((keys, owner))  # rows stay in place (owner is sorted), entries by key within
    kept = by_key[(np.arange(len(items)) - indptr[owner]) < max_items]
    kept = kept[np.lexsort((items[kept], owner[kept]))]  # back to ascending items within each row
    kept_lengths = np.minimum(lengths, max_items)
    rank = np.arange(len(kept)) - np.repeat(np.cumsum(kept_lengths) - kept_lengths, kept_lengths)
    width = max(1, int(kept_lengths.max(initial=0)))
    table = np.zeros((n_users, width), dtype=np.int64)
    weights = np.zeros((n_users, width), dtype=np.float32)
    table[owner[kept], rank] = items[kept]
    weights[owner[kept], rank] = (1.0 / np.sqrt(np.maximum(kept_lengths, 1)))[owner[kept]]
    return table, weights


def _capped(counted: torch.Tensor, max_items: int, seed: int) -> torch.Tensor:
    """counted bool (P, m) -> bool (P, m): in each row at most `max_items` of the True entries,
    those with the smallest of m random keys drawn from `np.random.default_rng(seed)` (the rule
    `implicit_item_table` applies to a training row)."""
    if counted.shape[1] <= max_items:
        return counted
    keys = torch.from_numpy(np.random.default_rng(seed).random(counted.shape[1])).to(counted.device)
    order = torch.argsort(keys)
    within = torch.empty_like(counted)
    within[:, order] = counted[:, order].cumsum(1) <= max_items
    return counted & within


@register
class NeuralRecommender(Recommender):
    """Embeddings + MLP (optionally NeuMF) for explicit ratings; see the module docstring."""

    name: ClassVar[str] = "neural"
    Config: ClassVar[type] = NeuralConfig
    explicit: ClassVar[bool] = True
    #: `explain` gives leave-one-out score drops: exact per rating, but an MLP's drops need not add up.
    explain_is_additive: ClassVar[bool] = False

    def __init__(self, config: NeuralConfig | None = None, device: str | torch.device = "auto") -> None:
        super().__init__(config, device)
        self.network: NeuralNetwork | None = None
        # Implicit-feedback items of every training user, padded: items int64 (n_users, c), weights
        # float32 (n_users, c), lengths int64 (n_users,), on device (see `implicit_item_table`).
        self._implicit: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        # The same for the raters of every training item (item-side implicit feedback).
        self._item_implicit: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._explain_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._explain_lock = threading.Lock()

    # --- output range -------------------------------------------------------------------------
    @property
    def output_range(self) -> tuple[float, float]:
        """(lo, hi) of the sigmoid range: the rating scale widened by `range_margin`."""
        low, high = self.rating_scale
        return float(low) - self.config.range_margin, float(high) + self.config.range_margin

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.output_range
        return lo + (hi - lo) * torch.sigmoid(x)

    def _logit(self, rating: float) -> float:
        lo, hi = self.output_range
        fraction = min(max((rating - lo) / (hi - lo), 1e-3), 1 - 1e-3)
        return math.log(fraction / (1 - fraction))

    def _build(self, n_users: int, n_items: int) -> NeuralNetwork:
        config: NeuralConfig = self.config
        return NeuralNetwork(
            n_users, n_items, config.embedding_dim, config.hidden, config.activation, config.dropout,
            config.fusion, config.use_biases, config.implicit_feedback, sparse=config.optimizer == "sparse_adam",
            item_implicit_feedback=config.item_implicit_feedback,
        ).to(self.device)

    def _bags(self, users: torch.Tensor) -> Bags:
        """The implicit-feedback items of known users int64 (n,) (on device) as `Bags`: padded
        (n, c) on CUDA (no host-device sync), flattened on the CPU (no work on the padding)."""
        return self._rows_as_bags(users, self._implicit)

    @staticmethod
    def _rows_as_bags(rows: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Bags:
        """Rows int64 (n,) of a padded (entries, weights, lengths) table as `Bags` (see `_bags`)."""
        items, weights, lengths = (part[rows] for part in table)
        if rows.is_cuda:
            return Bags(items, None, weights)
        present = weights > 0
        return Bags(items[present], torch.cumsum(lengths, 0) - lengths, weights[present])

    def _user_side(self, users: torch.Tensor, network: NeuralNetwork | None = None) -> Side:
        """Side of known users int64 (n,) on device, implicit feedback included. On the CPU the
        sums are computed once per distinct user, then repeated; on CUDA once per row (finding
        the distinct users would cost a host-device sync)."""
        network = network if network is not None else self._net()
        if not self.config.implicit_feedback:
            return network.user_side(users)
        if users.is_cuda:
            return network.user_side(users, self._bags(users))
        distinct, position = torch.unique(users, return_inverse=True)
        side = network.user_side(distinct, self._bags(distinct))
        return Side(*(None if part is None else part[position] for part in side))

    def _item_side(self, items: torch.Tensor, network: NeuralNetwork | None = None) -> Side:
        """Side of known items int64 (n,) on device, item-side implicit feedback included (sums
        once per distinct item on the CPU, once per row on CUDA)."""
        network = network if network is not None else self._net()
        if not self.config.item_implicit_feedback:
            return network.item_side(items)
        if items.is_cuda:
            return network.item_side(items, self._rows_as_bags(items, self._item_implicit))
        distinct, position = torch.unique(items, return_inverse=True)
        side = network.item_side(distinct, self._rows_as_bags(distinct, self._item_implicit))
        return Side(*(None if part is None else part[position] for part in side))

    def _set_rated(self) -> None:
        indptr, rated = self._seen_indptr.numpy(), self._seen_items.numpy()
        self._implicit = self._item_implicit = None
        if self.config.implicit_feedback:
            self._implicit = self._padded(implicit_item_table(indptr, rated, self.config.implicit_max_items, self.config.seed))
        if self.config.item_implicit_feedback:
            # the users' CSR rows turned into the items' CSR rows of raters (users ascending)
            raters = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
            order = np.argsort(rated, kind="stable")
            item_indptr = np.zeros(self.n_items + 1, dtype=np.int64)
            np.cumsum(np.bincount(rated, minlength=self.n_items), out=item_indptr[1:])
            table = implicit_item_table(item_indptr, raters[order], self.config.item_implicit_max_users, self.config.seed + 1)
            self._item_implicit = self._padded(table)

    @staticmethod
    def _entry_weights(table: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, rows: np.ndarray, entries: np.ndarray) -> np.ndarray:
        """float32 (n,): the weight with which entry entries[k] is in padded row rows[k] of `table`
        (the row's |N|^-½ when the cap kept it, else 0; all 0 without the table)."""
        if table is None:
            return np.zeros(len(rows), dtype=np.float32)
        table_entries, table_weights = (part.cpu().numpy() for part in table[:2])
        rows, entries = rows.astype(np.int64), entries.astype(np.int64)
        width = max(int(table_entries.max(initial=0)), int(entries.max(initial=0))) + 1
        kept_rows, kept_columns = np.nonzero(table_weights > 0)
        kept = np.isin(rows * width + entries, kept_rows * width + table_entries[kept_rows, kept_columns])
        return np.where(kept, table_weights[rows, 0], 0.0).astype(np.float32)

    def _padded(self, table: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(entries, weights) of `implicit_item_table` -> (entries, weights, row lengths) on device."""
        entries, weights = table
        return tuple(torch.from_numpy(part).to(self.device) for part in (entries, weights, (weights > 0).sum(1)))

    # --- training -----------------------------------------------------------------------------
    def _fit(self, train: Dataset, valid: Dataset | None, on_epoch: EpochCallback) -> None:
        config: NeuralConfig = self.config
        if config.batch_size == 0:
            config = dataclasses.replace(config, batch_size=automatic_batch_size(len(train)))
        network = self._build(train.n_users, train.n_items)
        network.reset(config.init_std, self._logit(float(np.mean(train.ratings))), torch.Generator().manual_seed(config.seed))
        dropout_generator = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        self.network = None  # only a finished run is kept (a cancelled fit leaves no half-trained model)
        self._explain_cache.clear()
        self._set_rated()

        users = torch.from_numpy(train.users.astype(np.int64)).to(self.device)
        items = torch.from_numpy(train.items.astype(np.int64)).to(self.device)
        ratings = torch.from_numpy(train.ratings).to(self.device)
        tables = network.embedding_tables()
        inputs = (users, items)
        if config.implicit_leave_target_out:  # how much each rating weighs in its user's and item's sums
            own = [self._entry_weights(table, rows, entries) for table, rows, entries in (
                (self._implicit, train.users, train.items), (self._item_implicit, train.items, train.users))]
            inputs += tuple(torch.from_numpy(weights).to(self.device) for weights in own)

        def loss_fn(batch: tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
            user_side, item_side = self._user_side(batch[0], network), self._item_side(batch[1], network)
            if config.implicit_leave_target_out:
                if network.implicit is not None:
                    user_side = network.without_own(user_side, batch[1], batch[2])
                if network.item_implicit is not None:
                    item_side = network.without_own(item_side, batch[0], batch[3], item_side=True)
            x = network.pair_scores(user_side, item_side, dropout_generator)
            loss = torch.mean((self._activate(x) - target) ** 2)
            if config.reg_embeddings:  # the users' whole vectors, implicit-feedback sums included
                vectors = [v for v in (user_side.mlp, item_side.mlp, user_side.gmf, item_side.gmf) if v is not None]
                loss = loss + config.reg_embeddings * sum((v**2).sum(1) for v in vectors).mean()
            if config.reg_bias and user_side.bias is not None:
                loss = loss + config.reg_bias * torch.mean(user_side.bias**2 + item_side.bias**2)
            if config.reg_uniform:
                loss = loss + config.reg_uniform * sum((table.weight**2).sum(1).mean() for table in tables)
            return loss

        validate = None
        if valid is not None and len(valid):
            valid_users = torch.from_numpy(valid.users.astype(np.int64)).to(self.device)
            valid_items = torch.from_numpy(valid.items.astype(np.int64)).to(self.device)
            valid_ratings = torch.from_numpy(valid.ratings).to(self.device)
            low, high = self.rating_scale

            def validate() -> dict[str, float]:
                x = network.pair_scores(self._user_side(valid_users, network), self._item_side(valid_items, network))
                predicted = self._activate(x).clamp(low, high)
                error = predicted - valid_ratings
                return {"rmse": float(torch.sqrt(torch.mean(error**2))), "mae": float(torch.mean(error.abs()))}

        train_loop(network, inputs, ratings, loss_fn, config, on_epoch=on_epoch, validate=validate, monitor="rmse")
        network.zero_grad(set_to_none=True)  # the last step's gradients are of no further use
        self.network = network

    # --- scoring ------------------------------------------------------------------------------
    def _net(self) -> NeuralNetwork:
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
            user_side = self._user_side(torch.from_numpy(users).to(self.device))
            x = network.pair_scores(user_side, self._item_side(torch.from_numpy(items).to(self.device)))
            return self._activate(x).clamp(low, high).float().cpu().numpy()

    def _score_grid(self, users: Side) -> torch.Tensor:
        """Predicted ratings (P, n_items) float32 of every item for user parameters `users` (P rows),
        in chunks of users so that no more than `_GRID_ELEMENTS` activations exist at once."""
        network = self._net()
        items = self._item_side(torch.arange(self.n_items, device=self.device))
        rows = max(1, _GRID_ELEMENTS // (self.n_items * max(self.config.hidden)))
        chunks = []
        for start in range(0, users.mlp.shape[0], rows):
            part = Side(*(None if t is None else t[start : start + rows] for t in users))
            chunks.append(self._activate(network.grid_scores(part, items)))
        return torch.cat(chunks).float() if chunks else torch.zeros((0, self.n_items), device=self.device)

    def score_users(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Predicted ratings of every item for known users: (len(user_idx), n_items) float32 on
        `device`, unclipped (clipping would create ties)."""
        self._net()
        users = torch.as_tensor(user_idx, dtype=torch.long).reshape(-1)
        self._check_indices(users.cpu().numpy(), None)
        with torch.no_grad():
            return self._score_grid(self._user_side(users.to(self.device)))

    def item_factors(self) -> np.ndarray:
        """Item vectors (n_items, d) float32: the dot-product (GMF) vectors q_i with fusion "neumf"
        (the space `user_vector` lives in), the MLP embeddings e_i with fusion "mlp"; with
        item-side implicit feedback, sums over the raters included (the vectors scores use)."""
        network = self._net()
        with torch.no_grad():
            side = self._item_side(torch.arange(self.n_items, device=self.device))
        table = side.gmf if side.gmf is not None else side.mlp
        return table.detach().float().cpu().numpy().copy()

    # --- new users ----------------------------------------------------------------------------
    @property
    def _repr_size(self) -> int:
        """Length of a fold-in representation [e_u; p_u; b_u]."""
        d = self.config.embedding_dim
        return d + (d if self.config.fusion == "neumf" else 0) + (1 if self.config.use_biases else 0)

    def _split(self, theta: torch.Tensor) -> Side:
        """Side of users from representations (P, size): [e_u (d) | p_u (d, neumf) | b_u (1, biases)]."""
        d = self.config.embedding_dim
        gmf = theta[:, d : 2 * d] if self.config.fusion == "neumf" else None
        bias = theta[:, -1] if self.config.use_biases else None
        return Side(theta[:, :d], gmf, bias)

    def _prior(self) -> torch.Tensor:
        """The mean trained user's representation (size,) float32: fold-in's start and anchor."""
        network = self._net()
        side = network.user_side(torch.arange(self.n_users, device=self.device))
        parts = [side.mlp.mean(0)]
        if side.gmf is not None:
            parts.append(side.gmf.mean(0))
        if side.bias is not None:
            parts.append(side.bias.mean(0, keepdim=True))
        return torch.cat(parts).detach()

    def _fold_in_many(self, items: np.ndarray, ratings: np.ndarray, weights: torch.Tensor) -> torch.Tensor:
        """Representations (P, size) float32 of P new users who rated `items` (m,) with `ratings` (m,),
        user p counting rating j with weight `weights[p, j]` (P, m) (0 leaves it out).

        Minimises, for every user p independently,

            L_p(θ) = Σ_j w_pj (r̂(θ, j) - r_j)² + λ |θ - θ̄|²,     λ = fold_in_reg,

        where θ = [e_u; p_u; b_u] are the user's own parameters, θ̄ those of the mean trained user
        and r̂(θ, j) the model's prediction for the user θ + o_p, o_p being the implicit-feedback
        sums over the items user p counts (0 without implicit feedback), with every network
        weight frozen. The result is θ + o_p, the vectors the scores are made of. Solved by
        `fold_in_steps` Adam steps (β = 0.9, 0.999) from θ = θ̄ with a learning rate
        cosine-decayed from `fold_in_learning_rate` to 0. Adam acts coordinate-wise and the losses
        share no parameter, so each row follows exactly the path it would follow alone: one
        batched run gives every leave-one-out fold-in of `explain`. (Hand-written rather than
        torch.optim so the frozen network gets no gradients and no optimiser machinery loads.)
        """
        config: NeuralConfig = self.config
        network = self._net()
        prior = self._prior()
        theta = prior.expand(weights.shape[0], -1).clone()
        if len(items) == 0:
            return theta
        with torch.no_grad():
            item_index = torch.from_numpy(items).to(self.device)
            item_side = self._item_side(item_index)
            offset = torch.zeros_like(theta)
            if network.implicit is not None:
                counted = _capped(weights > 0, config.implicit_max_items, config.seed).float()
                counted = counted * counted.sum(1, keepdim=True).clamp(min=1).rsqrt()  # (P, m): |N_p|^-½ on N_p
                d = self.config.embedding_dim
                offset[:, :d] = counted @ network.implicit(item_index)
                if network.implicit_gmf is not None:
                    offset[:, d : 2 * d] = counted @ network.implicit_gmf(item_index)
        targets = torch.from_numpy(ratings.astype(np.float32)).to(self.device)
        first_moment, second_moment = torch.zeros_like(theta), torch.zeros_like(theta)
        beta1, beta2, epsilon = 0.9, 0.999, 1e-8
        steps = config.fold_in_steps
        for step in range(1, steps + 1):
            theta.requires_grad_(True)
            predicted = self._activate(network.grid_scores(self._split(theta + offset), item_side))
            loss = (weights * (predicted - targets) ** 2).sum() + config.fold_in_reg * ((theta - prior) ** 2).sum()
            (gradient,) = torch.autograd.grad(loss, theta)
            with torch.no_grad():
                first_moment.mul_(beta1).add_(gradient, alpha=1 - beta1)
                second_moment.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
                rate = config.fold_in_learning_rate * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
                denominator = (second_moment / (1 - beta2**step)).sqrt_().add_(epsilon)
                theta = theta.detach() - rate / (1 - beta1**step) * first_moment / denominator
        return (theta + offset).detach()

    def _profile(self, ratings: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
        """Validated ratings as (items int64 (m,) sorted, ratings float64 (m,))."""
        clean = self._validate_new_ratings(ratings)
        items = np.array(sorted(clean), dtype=np.int64)
        return items, np.array([clean[i] for i in items.tolist()], dtype=np.float64)

    def fold_in(self, ratings: Mapping[int, float]) -> np.ndarray:
        """A new user's representation [e_u; p_u; b_u] (size,) float32 from {item_idx: rating}.

        size = d (MLP embedding) + d (dot-product vector, fusion "neumf" only) + 1 (bias, with
        biases); with implicit feedback the vectors include the sum over the rated items.
        Everything else stays frozen; see `_fold_in_many` for the objective and the optimiser.
        Deterministic: the same ratings give the same vector. No ratings give the mean trained
        user; a few ratings move it only as far as the pull `fold_in_reg` allows.
        """
        self._net()
        items, values = self._profile(ratings)
        weights = torch.ones((1, len(items)), device=self.device)
        return self._fold_in_many(items, values, weights)[0].cpu().numpy()

    def _check_repr(self, user_repr: np.ndarray) -> torch.Tensor:
        rep = np.asarray(user_repr, dtype=np.float32).reshape(-1)
        if rep.shape[0] != self._repr_size:
            raise ValueError(
                f"a fold-in representation of this model has {self._repr_size} values "
                f"(embedding, dot-product vector, bias), got {rep.shape[0]}; pass the result of fold_in"
            )
        return torch.from_numpy(rep).to(self.device)[None, :]

    def score_folded(self, user_repr: np.ndarray) -> torch.Tensor:
        """Predicted ratings (n_items,) float32 on `device` for a `fold_in` representation (unclipped)."""
        self._net()
        with torch.no_grad():
            return self._score_grid(self._split(self._check_repr(user_repr)))[0]

    def user_vector(self, user_repr: np.ndarray) -> np.ndarray | None:
        """With fusion "neumf": the dot-product vector p_u (d,) float32, in the space of
        `item_factors()` (q_i; p_u · q_i is part of the score). With fusion "mlp": None — the user
        and item embeddings enter the MLP through different weights (W_u e_u + W_i e_i), so e_u is
        not in the space of the e_i and has no place on their map."""
        self._net()
        if self.config.fusion != "neumf":
            return None
        return self._split(self._check_repr(user_repr)).gmf[0].cpu().numpy().copy()

    def explain(self, ratings: Mapping[int, float], item_idx: int) -> list[tuple[int, float]]:
        """Leave-one-out contribution of each rating to a new user's predicted rating of `item_idx`.

        The MLP is not additive in the ratings, so each rating j gets the drop of the prediction
        when the user is folded in without it: c_j = r̂(i | all ratings) - r̂(i | all but j), both
        unclipped `score_folded` values of `fold_in` representations (computed in one batched
        fold-in of m + 1 users, equal to the separate fold-ins up to float rounding). The c_j need
        not sum to anything. Returns [(rated_item_idx, c_j)], largest first, ties by item index;
        [] without ratings. The fold-ins of the last few profiles are cached, so explaining many
        items of one profile costs one fold-in.
        """
        self._net()
        if not 0 <= int(item_idx) < self.n_items:
            raise IndexError(f"item index {item_idx} out of range 0..{self.n_items - 1}")
        items, values = self._profile(ratings)
        if len(items) == 0:
            return []
        representations = self._leave_one_out(items, values)
        network = self._net()
        with torch.no_grad():
            item = self._item_side(torch.tensor([int(item_idx)], device=self.device))
            scores = self._activate(network.grid_scores(self._split(representations), item))[:, 0].double().cpu().numpy()
        contributions = scores[0] - scores[1:]
        order = np.lexsort((items, -contributions))
        return [(int(items[j]), float(contributions[j])) for j in order]

    def _leave_one_out(self, items: np.ndarray, values: np.ndarray) -> torch.Tensor:
        """(m + 1, size): the fold-in with every rating, then without rating j for j = 0..m-1."""
        config: NeuralConfig = self.config
        key = (tuple(items.tolist()), tuple(values.tolist()), config.fold_in_reg, config.fold_in_steps, config.fold_in_learning_rate)
        with self._explain_lock:
            if key in self._explain_cache:
                self._explain_cache.move_to_end(key)
                return self._explain_cache[key]
        m = len(items)
        weights = torch.ones((m + 1, m), device=self.device)
        weights[1:].fill_diagonal_(0.0)
        representations = self._fold_in_many(items, values, weights)
        with self._explain_lock:
            self._explain_cache[key] = representations
            while len(self._explain_cache) > _EXPLAIN_CACHE_SIZE:
                self._explain_cache.popitem(last=False)
        return representations

    # --- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        return dict(self._net().state_dict())

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        n_users, dim = state["user_embedding.weight"].shape
        n_items = state["item_embedding.weight"].shape[0]
        if dim != self.config.embedding_dim:
            raise ValueError(f"weights have embedding_dim {dim}, config says {self.config.embedding_dim}")
        network = self._build(n_users, n_items)
        network.load_state_dict(state, strict=True)
        network.eval()
        self.network = network
        self._explain_cache.clear()
        self._set_rated()

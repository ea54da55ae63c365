"""Implicit-feedback alternating least squares (Hu, Koren & Volinsky 2008), solved with batched
conjugate gradients in torch (Takács, Pilászy & Tikk 2011).

Every rating r_ui >= `min_rating` counts as a positive, p_ui = 1, with confidence

    c_ui = 1 + alpha * r_ui                      confidence="linear"
    c_ui = 1 + alpha * log(1 + r_ui / epsilon)   confidence="log"

and every other (user, item) cell is a negative, p_ui = 0, with confidence 1 (ratings below
`min_rating` are treated as unobserved; repeated (user, item) rows add their confidences:
c = 1 + Σ (c_k - 1)). The model is scored by s_ui = x_u · y_i and fitted by minimising

    L(X, Y) = Σ_{u,i} c_ui (p_ui - x_u · y_i)² + λ (Σ_u |x_u|² + Σ_i |y_i|²),     λ = regularization

over *all* cells. With the items fixed, each user's factors solve the linear system

    (YᵀY + Yᵀ(C_u - I)Y + λI) x_u = Yᵀ C_u p_u,

where only the user's positives enter the sparse part; likewise for items with users fixed.
Each iteration solves all items, then all users (so the final user factors are exact least-squares
answers to the final item factors, which is what `fold_in` reproduces).

Solvers (`solver`):

* "cg": `cg_steps` conjugate-gradient steps per system, warm-started from the previous factors, for
  all users (or items) at once. One product A·P for every row is P @ (YᵀY + λI) plus the sparse
  part computed through the CSR of positives: `torch.sparse.sampled_addmm` gives y_j · p_u at each
  positive (u, j), and a CSR matrix product sums (c_uj - 1)(y_j · p_u) y_j per user. No Python loop
  runs over users, so the same code runs on CPU and CUDA.
* "cholesky": the exact solution of every system by a batched Cholesky factorisation (float64),
  chunked over rows to bound memory: the reference the tests compare the CG solver with.

New users are folded in by the exact solve of their own system against the frozen item factors
(as `implicit`'s `recalculate_user`); `explain` splits a score into per-item contributions
(section 5 of Hu et al.).

Across processes (a process group of more than one rank, see `recengine.distributed`): each rank
solves its contiguous block of items, then of users (`shard_range`), against the full fixed factors,
and an all-gather gives every rank the full new factors. The Gram matrix YᵀY + λI of each half-step
is the all-reduced sum of the ranks' blocks (each rank multiplies only the rows it solved), and so
are the parts of the objective. Rank 0 alone validates and reports. The factors equal those of one
process up to float32 rounding of the summation order (tested with 2 CPU processes: scores within
1e-4; measured 3e-6 after 4 CG iterations, and 0 with the Cholesky solver).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping

import numpy as np
import torch

from recengine import distributed
from recengine.data.dataset import Dataset
from recengine.models.base import (
    MAX_EMBEDDING_DIM,
    MAX_SEED,
    EpochCallback,
    EpochEvent,
    NotFittedError,
    Recommender,
    TrainingError,
    check_range,
    register,
)

__all__ = ["ALSConfig", "AlternatingLeastSquares", "CONFIDENCES", "SOLVERS", "confidence_weights"]

#: How ratings become confidences (see the module docstring).
CONFIDENCES = ("linear", "log")
#: How each half-step's linear systems are solved.
SOLVERS = ("cg", "cholesky")
#: Validation cut-off and metrics reported per iteration when `fit` is given a validation part.
VALIDATION_K = 10
VALIDATION_METRICS = ("precision", "ndcg")
#: Bound on the (rows, d, d) float64 blocks the Cholesky solver builds at once.
_CHOLESKY_CHUNK_BYTES = 64 << 20
#: CG residuals below this squared norm count as converged (their step is skipped).
_CG_TINY = 1e-20


#: Upper bounds of ALSConfig's counts (factors share MAX_EMBEDDING_DIM with the other models).
MAX_ALS_ITERATIONS = 1000
MAX_CG_STEPS = 100
MAX_VALID_USERS = 10**9


@dataclass(frozen=True)
class ALSConfig:
    """Hyper-parameters of implicit ALS (defaults chosen by `benchmarks/als_vs_implicit.py --tune`
    on a validation part of the ml-latest-small 80/20 training data; the test part is never read)."""

    #: Length d of the user and item factor vectors.
    factors: int = 64
    #: Alternating iterations (each solves every item, then every user).
    iterations: int = 15
    #: λ, the L2 weight on every user and item factor vector (not scaled by their counts).
    regularization: float = 30.0
    #: Weight of a rating in its confidence (see `confidence`).
    alpha: float = 2.0
    #: "linear": c = 1 + alpha * r; "log": c = 1 + alpha * log(1 + r / epsilon).
    confidence: str = "log"
    #: Scale of the ratings in the "log" confidence (unused by "linear").
    epsilon: float = 1.0
    #: Ratings below this are treated as unobserved (0 keeps every rating as a positive).
    min_rating: float = 0.0
    #: "cg" (conjugate gradients, fast) or "cholesky" (exact, for reference).
    solver: str = "cg"
    #: Conjugate-gradient steps per half-step (used by solver "cg").
    cg_steps: int = 3
    #: Standard deviation of the normal initialisation of the factors.
    init_std: float = 0.01
    #: Users sampled (seeded) for the per-iteration validation metrics; 0 evaluates every user.
    valid_users: int = 1000
    #: Seeds the initial factors and the validation sample.
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("factors", "iterations", "cg_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("valid_users", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("alpha", "min_rating"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("regularization", "epsilon", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        # upper bounds: beyond them a run never ends or cannot be allocated
        check_range("factors", self.factors, 1, MAX_EMBEDDING_DIM)
        check_range("iterations", self.iterations, 1, MAX_ALS_ITERATIONS)
        check_range("cg_steps", self.cg_steps, 1, MAX_CG_STEPS)
        check_range("valid_users", self.valid_users, 0, MAX_VALID_USERS)
        check_range("seed", self.seed, 0, MAX_SEED)
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be one of {CONFIDENCES}, got {self.confidence!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")


def confidence_weights(ratings: np.ndarray, config: ALSConfig) -> np.ndarray:
    """Confidence c (float64, same shape) of each rating under `config` (ratings below
    `min_rating` included; the caller drops them)."""
    ratings = np.asarray(ratings, dtype=np.float64)
    if config.confidence == "log":
        return 1.0 + config.alpha * np.log1p(ratings / config.epsilon)
    return 1.0 + config.alpha * ratings


# --- the sparse side of a half-step ------------------------------------------------------------
def _sparse_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns (once) that sparse CSR support is "beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


@dataclass(frozen=True)
class _Side:
    """The positives of one half-step as CSR over the rows being solved (users, or items).

    crow (n_rows + 1,) int64, col (nnz,) int64 column index of each positive (sorted within a
    row), extra (nnz,) float32 = c - 1, the confidence above the negatives' 1; all on the device.
    """

    crow: torch.Tensor
    col: torch.Tensor
    extra: torch.Tensor
    n_cols: int

    @property
    def n_rows(self) -> int:
        return self.crow.shape[0] - 1

    def with_values(self, values: torch.Tensor) -> torch.Tensor:
        return _sparse_csr(self.crow, self.col, values, (self.n_rows, self.n_cols))

    def rows(self, start: int, stop: int) -> "_Side":
        """The positives of rows [start, stop) only (rows renumbered from 0, same columns)."""
        first, last = int(self.crow[start]), int(self.crow[stop])
        return _Side(self.crow[start : stop + 1] - first, self.col[first:last], self.extra[first:last], self.n_cols)

    def rhs(self, fixed: torch.Tensor) -> torch.Tensor:
        """Yᵀ C_u p_u for every row: (n_rows, d) = Σ_j c_j y_j over the row's positives."""
        return self.with_values(self.extra + 1.0) @ fixed

    def product(self, vectors: torch.Tensor, fixed: torch.Tensor, fixed_t: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        """A v for every row's system: (n_rows, d) = v (YᵀY + λI) + Σ_j (c_j - 1)(y_j · v) y_j.

        fixed: Y (n_cols, d); fixed_t: Yᵀ contiguous (d, n_cols); gram: YᵀY + λI (d, d).
        The sparse part visits only the positives: a sampled product gives y_j · v_u at each
        positive (u, j), a CSR product sums the weighted y_j per row.
        """
        dots = self.sampled_dots(vectors, fixed_t)
        return (vectors @ gram).addmm_(self.with_values(dots.mul_(self.extra)), fixed)

    def sampled_dots(self, vectors: torch.Tensor, fixed_t: torch.Tensor) -> torch.Tensor:
        """v_u · y_j at every positive (u, j), in CSR order: (nnz,) float32."""
        pattern = self.with_values(self.extra)
        return torch.sparse.sampled_addmm(pattern, vectors, fixed_t, beta=0.0).values()


def _build_sides(train: Dataset, config: ALSConfig, device: torch.device) -> tuple[_Side, _Side]:
    """(users side, items side): the positives of `train` as CSR by user and by item."""
    indptr, items, ratings = train.user_item_csr()
    users = np.repeat(np.arange(train.n_users, dtype=np.int64), np.diff(indptr))
    items = items.astype(np.int64)
    extra = confidence_weights(ratings, config) - 1.0
    keep = ratings >= config.min_rating
    users, items, extra = users[keep], items[keep], extra[keep]
    # merge repeated (user, item) rows: the CSR is sorted by (user, item), so repeats are adjacent
    key = users * train.n_items + items
    first = np.concatenate(([True], key[1:] != key[:-1])) if key.size else np.zeros(0, dtype=bool)
    if not first.all():
        starts = np.flatnonzero(first)
        extra = np.add.reduceat(extra, starts)
        users, items = users[starts], items[starts]

    def side(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> _Side:
        crow = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=crow[1:])
        return _Side(
            torch.from_numpy(crow).to(device),
            torch.from_numpy(np.ascontiguousarray(cols)).to(device),
            torch.from_numpy(values.astype(np.float32)).to(device),
            n_cols,
        )

    by_item = np.argsort(items * train.n_users + users, kind="stable")
    return (
        side(users, items, extra, train.n_users, train.n_items),
        side(items[by_item], users[by_item], extra[by_item], train.n_items, train.n_users),
    )


# --- solvers -----------------------------------------------------------------------------------
def _gram(fixed: torch.Tensor, regularization: float) -> torch.Tensor:
    """YᵀY + λI (d, d) in the dtype of `fixed`."""
    gram = fixed.T @ fixed
    gram.diagonal().add_(regularization)
    return gram


def solve_cg(
    side: _Side,
    fixed: torch.Tensor,
    current: torch.Tensor,
    regularization: float,
    steps: int,
    fixed_t: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
) -> torch.Tensor:
    """`steps` conjugate-gradient steps on every row's system, warm-started from `current`.

    fixed: (n_cols, d) float32 factors of the other side (`fixed_t`: the same transposed and
    contiguous, when the caller has it; `gram`: YᵀY + λI (d, d) float32, when the caller has it);
    current: (n_rows, d) float32 start (not modified).
    Returns the new (n_rows, d) float32 factors. All rows advance together; a row whose residual
    has vanished (|r|² <= 1e-20) stops moving. Each step costs one product A·P (see
    `_Side.product`) and a few element-wise passes, all in place.
    """
    gram = _gram(fixed, regularization) if gram is None else gram
    fixed_t = fixed.T.contiguous() if fixed_t is None else fixed_t
    x = current.clone()
    residual = side.rhs(fixed).sub_(side.product(x, fixed, fixed_t, gram))
    direction = residual.clone()
    rs_old = torch.linalg.vecdot(residual, residual)
    for step_number in range(steps):
        a_direction = side.product(direction, fixed, fixed_t, gram)
        curvature = torch.linalg.vecdot(direction, a_direction)
        active = rs_old > _CG_TINY
        step = torch.where(active, rs_old / curvature.clamp_min(torch.finfo(curvature.dtype).tiny), 0.0)[:, None]
        x.addcmul_(step, direction)
        if step_number == steps - 1:
            break
        residual.addcmul_(step, a_direction, value=-1.0)
        rs_new = torch.linalg.vecdot(residual, residual)
        beta = torch.where(active, rs_new / rs_old.clamp_min(_CG_TINY), 0.0)[:, None]
        direction.mul_(beta).add_(residual)
        rs_old = rs_new
    return x


def solve_cholesky(side: _Side, fixed: torch.Tensor, regularization: float, gram: torch.Tensor | None = None) -> torch.Tensor:
    """The exact solution of every row's system, by batched Cholesky factorisation in float64.

    gram: YᵀY + λI (d, d) float64 when the caller has it (else computed from `fixed`).

    Rows are taken in order of their number of positives and solved in chunks: a chunk of r rows
    with at most L positives each gathers their factors into an (r, L, d) block (zero-padded), builds
    the systems with one batched product and solves them together; chunks hold about 64 MiB.
    Returns (n_rows, d) float32.
    """
    d = fixed.shape[1]
    device = fixed.device
    fixed64 = fixed.double()
    gram = _gram(fixed64, regularization) if gram is None else gram
    rhs = side.with_values(side.extra.double() + 1.0) @ fixed64
    extra64 = side.extra.double()
    crow = side.crow.cpu().numpy()
    counts = np.diff(crow)
    order = np.argsort(counts, kind="stable")
    # a chunk [a, b) of `order` costs (b - a) * max(its largest count, d) * d float64 values
    widths = np.maximum(counts[order], d)
    budget = max(1, _CHOLESKY_CHUNK_BYTES // (8 * d))
    out = torch.empty(side.n_rows, d, dtype=torch.float64, device=device)
    start = 0
    while start < side.n_rows:
        window = widths[start : start + budget // d + 1]  # a row costs at least d, so no chunk is longer
        sizes = np.arange(1, len(window) + 1) * window
        stop = start + max(1, int(np.searchsorted(sizes, budget, side="right")))
        rows = torch.from_numpy(order[start:stop]).to(device)
        width = int(counts[order[stop - 1]])
        offsets = torch.arange(width, device=device)
        present = offsets[None, :] < (side.crow[rows + 1] - side.crow[rows])[:, None]
        positions = torch.where(present, side.crow[rows][:, None] + offsets[None, :], 0)
        gathered = fixed64[side.col[positions]] * present[:, :, None]  # (r, L, d), zero padding
        weighted = gathered * extra64[positions][:, :, None]
        systems = gram + weighted.transpose(1, 2) @ gathered
        out[rows] = torch.cholesky_solve(rhs[rows][:, :, None], torch.linalg.cholesky(systems))[:, :, 0]
        start = stop
    return out.float()


def objective(
    users: _Side,
    user_factors: torch.Tensor,
    item_factors: torch.Tensor,
    regularization: float,
    item_factors_t: torch.Tensor | None = None,
) -> tuple[float, float]:
    """(L, W): the weighted objective L (module docstring) over all cells, and the total weight
    W = Σ_{u,i} c_ui = n_users · n_items + Σ (c - 1) over positives.

    Only the positives are visited: Σ_{all cells} s² = Σ (XᵀX ∘ YᵀY), the penalty is
    λ (tr XᵀX + tr YᵀY), and one sampled product gives the scores at the positives. The d x d
    Gram matrices are float32, every sum after them float64.
    """
    x, y = user_factors, item_factors
    y_t = y.T.contiguous() if item_factors_t is None else item_factors_t
    xtx, yty = (x.T @ x).double(), (y_t @ y).double()
    scores = users.sampled_dots(x, y_t).double()
    confidence = users.extra.double() + 1.0
    total = (xtx * yty).sum() + (confidence * (1.0 - scores) ** 2 - scores**2).sum()
    total = total + regularization * (xtx.trace() + yty.trace())
    weight = float(users.n_rows) * users.n_cols + float(users.extra.double().sum())
    return float(total), weight


# --- the model ---------------------------------------------------------------------------------
@register
class AlternatingLeastSquares(Recommender):
    """Implicit-feedback ALS; see the module docstring for the model and the solvers."""

    name: ClassVar[str] = "als"
    Config: ClassVar[type] = ALSConfig
    explicit: ClassVar[bool] = False

    def __init__(self, config: ALSConfig | None = None, device: str | torch.device = "auto") -> None:
        super().__init__(config, device)
        self._user_factors: torch.Tensor | None = None  # (n_users, d) float32 on device
        self._item_factors: torch.Tensor | None = None  # (n_items, d) float32 on device
        # (the item factor tensor it was computed from, its version, Y (n_items, d) float64 on the
        # host, YᵀY + λI (d, d) float64): what every new user's system starts from; see `_host_items`
        self._host_cache: tuple[torch.Tensor, int, np.ndarray, np.ndarray] | None = None

    # --- training -----------------------------------------------------------------------------
    def _fit(self, train: Dataset, valid: Dataset | None, on_epoch: EpochCallback) -> None:
        """Alternate item and user solves for `iterations`; one event per iteration.

        The event's `loss` is the objective L divided by the total confidence weight W (see
        `objective`): the confidence-weighted mean squared error plus the scaled penalty, so it is
        comparable across datasets. With `valid`, the event also carries precision@10 and
        ndcg@10 over up to `valid_users` sampled users (`recengine.evaluation.ranking_metrics`,
        training items excluded); its `seconds` include that evaluation.
        """
        config: ALSConfig = self.config
        self._host_cache = None
        users, items = _build_sides(train, config, self.device)
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        shape_x, shape_y = (train.n_users, config.factors), (train.n_items, config.factors)
        self._user_factors = (torch.randn(shape_x, generator=generator) * config.init_std).to(self.device)
        self._item_factors = (torch.randn(shape_y, generator=generator) * config.init_std).to(self.device)
        validate = self._validator(train, valid)
        if distributed.is_distributed():
            self._fit_sharded(users, items, validate, on_epoch)
            return

        reg, steps = config.regularization, config.cg_steps
        for iteration in range(1, config.iterations + 1):
            started = time.perf_counter()
            with torch.no_grad():
                if config.solver == "cg":
                    self._item_factors = solve_cg(items, self._user_factors, self._item_factors, reg, steps)
                    items_t = self._item_factors.T.contiguous()  # shared by the user half-step and the loss
                    self._user_factors = solve_cg(users, self._item_factors, self._user_factors, reg, steps, items_t)
                else:
                    self._item_factors = solve_cholesky(items, self._user_factors, reg)
                    items_t = self._item_factors.T.contiguous()
                    self._user_factors = solve_cholesky(users, self._item_factors, reg)
                total, weight = objective(users, self._user_factors, self._item_factors, reg, items_t)
            if not math.isfinite(total):
                raise TrainingError(
                    f"als objective became {total} at iteration {iteration}; the factors diverged. "
                    f"Raise regularization (now {config.regularization}) or lower alpha (now {config.alpha})"
                )
            metrics = validate() if validate is not None else {}
            on_epoch(EpochEvent(iteration, config.iterations, total / weight, time.perf_counter() - started, metrics))

    def _fit_sharded(
        self, users: _Side, items: _Side, validate: Callable[[], dict[str, float]] | None, on_epoch: EpochCallback
    ) -> None:
        """The iterations of `_fit` across the ranks of a process group (module docstring).

        Per half-step each rank solves its block of rows with the full fixed factors and the
        all-reduced Gram matrix, then the blocks are all-gathered. One all-reduce also collects the
        objective's parts, XᵀX (which is the next item half-step's Gram matrix) and the sum over
        the rank's positives. Rank 0 validates and calls `on_epoch`; every rank sees the same loss.
        """
        config: ALSConfig = self.config
        reg, steps, exact = config.regularization, config.cg_steps, config.solver == "cholesky"
        rank, world = distributed.rank(), distributed.world_size()
        user_block = distributed.shard_range(users.n_rows, rank, world)
        item_block = distributed.shard_range(items.n_rows, rank, world)
        my_users, my_items = users.rows(*user_block), items.rows(*item_block)
        weight = float(users.n_rows) * users.n_cols + float(users.extra.double().sum())
        dtype = torch.float64 if exact else torch.float32

        def block_gram(block: torch.Tensor) -> torch.Tensor:
            block = block.to(dtype)
            return distributed.all_reduce_sum(block.T @ block)

        def solve(side: _Side, fixed: torch.Tensor, current: torch.Tensor, gram: torch.Tensor,
                  fixed_t: torch.Tensor | None = None) -> torch.Tensor:
            """This rank's rows of one half-step; gram = YᵀY (all ranks' sum), λ added here."""
            system = gram.clone()
            system.diagonal().add_(reg)
            if exact:
                return solve_cholesky(side, fixed, reg, gram=system)
            return solve_cg(side, fixed, current, reg, steps, fixed_t, gram=system)

        x, y = self._user_factors, self._item_factors
        xtx = block_gram(x[slice(*user_block)])
        for iteration in range(1, config.iterations + 1):
            started = time.perf_counter()
            with torch.no_grad():
                my_y = solve(my_items, x, y[slice(*item_block)], xtx)
                y = distributed.all_gather_rows(my_y, items.n_rows)
                yty = block_gram(my_y)
                y_t = y.T.contiguous()
                my_x = solve(my_users, y, x[slice(*user_block)], yty, y_t)
                x = distributed.all_gather_rows(my_x, users.n_rows)
                # objective (see `objective`): Σ XᵀX∘YᵀY + Σ_positives [c (1 - s)² - s²] + λ (tr XᵀX + tr YᵀY)
                scores = my_users.sampled_dots(my_x, y_t).double()
                positives = ((my_users.extra.double() + 1.0) * (1.0 - scores) ** 2 - scores**2).sum()
                d = config.factors
                mine = my_x.to(dtype)
                parts = torch.cat([(mine.T @ mine).reshape(-1), positives.to(dtype).reshape(1)])
                distributed.all_reduce_sum(parts)
                xtx = parts[: d * d].reshape(d, d)
                total = float((xtx.double() * yty.double()).sum() + parts[-1].double()
                              + reg * (xtx.double().trace() + yty.double().trace()))
            self._user_factors, self._item_factors = x, y
            if not math.isfinite(total):
                raise TrainingError(
                    f"als objective became {total} at iteration {iteration}; the factors diverged. "
                    f"Raise regularization (now {config.regularization}) or lower alpha (now {config.alpha})"
                )

            def report(iteration: int = iteration, started: float = started, total: float = total) -> None:
                metrics = validate() if validate is not None else {}
                on_epoch(EpochEvent(iteration, config.iterations, total / weight, time.perf_counter() - started, metrics))

            distributed.run_on_main(report)

    def _validator(self, train: Dataset, valid: Dataset | None):
        """A function giving validation metrics on a seeded sample of the validation users, or None."""
        if valid is None or len(valid) == 0:
            return None
        from recengine.evaluation import relevant_items, ranking_metrics

        indptr, _ = relevant_items(train, valid)
        candidates = np.flatnonzero(np.diff(indptr) > 0)
        if candidates.size == 0:
            return None
        limit = self.config.valid_users
        if limit and candidates.size > limit:
            rng = np.random.default_rng(self.config.seed)
            candidates = np.sort(rng.choice(candidates, size=limit, replace=False))

        def validate() -> dict[str, float]:
            return ranking_metrics(
                self.score_users, train, valid, k=VALIDATION_K, metrics=VALIDATION_METRICS, users=candidates
            )

        return validate

    # --- scoring ------------------------------------------------------------------------------
    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._user_factors is None or self._item_factors is None or not self.is_fitted:
            raise NotFittedError(f"{self.name} model is not fitted: call fit(train) or Recommender.load(path) first")
        return self._user_factors, self._item_factors

    def predict(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Scores x_u · y_i float32 (n,) for pairs of known indices (not ratings: `explicit` is False)."""
        x, y = self._factors()
        users = np.asarray(user_idx, dtype=np.int64).reshape(-1)
        items = np.asarray(item_idx, dtype=np.int64).reshape(-1)
        if users.shape != items.shape:
            raise ValueError(f"user_idx and item_idx must have the same length, got {users.shape[0]} and {items.shape[0]}")
        self._check_indices(users, items)
        with torch.no_grad():
            u = torch.from_numpy(users).to(self.device)
            i = torch.from_numpy(items).to(self.device)
            return (x[u] * y[i]).sum(dim=1).float().cpu().numpy()

    def score_users(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Scores of every item for known users: (len(user_idx), n_items) float32 on `device`, X_u Yᵀ."""
        x, y = self._factors()
        users = torch.as_tensor(user_idx, dtype=torch.long).reshape(-1)
        self._check_indices(users.cpu().numpy(), None)
        with torch.no_grad():
            return x[users.to(self.device)] @ y.T

    def item_factors(self) -> np.ndarray:
        """Item factor vectors y_i: (n_items, d) float32."""
        return self._factors()[1].detach().float().cpu().numpy().copy()

    def user_factors(self) -> np.ndarray:
        """Trained user factor vectors x_u: (n_users, d) float32."""
        return self._factors()[0].detach().float().cpu().numpy().copy()

    # --- new users ----------------------------------------------------------------------------
    def _host_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(Y (n_items, d) float64, YᵀY + λI (d, d) float64) on the host, computed once per set of
        item factors: copying Y off the device and forming its Gram matrix cost O(n_items d²)
        (about 0.1 s at 90k items), every new user's system starts from them, and the factors only
        change in `fit` and `load`. The cache is keyed by the factor tensor itself and its
        in-place version counter, so new or modified factors are never paired with a stale Gram."""
        y_factors = self._factors()[1]
        cache = self._host_cache
        if cache is None or cache[0] is not y_factors or cache[1] != y_factors._version:
            y = y_factors.detach().cpu().double().numpy()
            gram = y.T @ y + self.config.regularization * np.eye(y.shape[1])
            y.flags.writeable = False
            gram.flags.writeable = False
            cache = (y_factors, y_factors._version, y, gram)
            self._host_cache = cache
        return cache[2], cache[3]

    def _user_system(self, ratings: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A new user's system in float64: (rated items (m,) int64, confidence c (m,) with 0 where
        the rating is below `min_rating`, their factors Y_u (m, d), A (d, d), item factors Y
        (n_items, d), read-only)."""
        y, gram = self._host_items()
        clean = self._validate_new_ratings(ratings)
        items = np.array(sorted(clean), dtype=np.int64)
        values = np.array([clean[i] for i in items.tolist()], dtype=np.float64)
        confidence = np.where(values >= self.config.min_rating, confidence_weights(values, self.config), 0.0)
        rated = y[items]
        positive = confidence > 0
        system = gram + (rated[positive] * (confidence[positive] - 1.0)[:, None]).T @ rated[positive]
        return items, confidence, rated, system, y

    def fold_in(self, ratings: Mapping[int, float]) -> np.ndarray:
        """A new user's factors x (d,) float32 from {item_idx: rating}: the exact least-squares
        solve against the frozen item factors, x = (YᵀY + Y_uᵀ(C_u - I)Y_u + λI)⁻¹ Y_uᵀ C_u p_u,
        the same system as one user half-step of training (ratings below `min_rating` ignored;
        no positive gives x = 0)."""
        items, confidence, rated, system, _ = self._user_system(ratings)
        if not (confidence > 0).any():
            return np.zeros(self.config.factors, dtype=np.float32)
        return np.linalg.solve(system, rated.T @ confidence).astype(np.float32)

    def _check_repr(self, user_repr: np.ndarray) -> np.ndarray:
        rep = np.asarray(user_repr, dtype=np.float32).reshape(-1)
        if rep.shape[0] != self.config.factors:
            raise ValueError(
                f"a fold-in representation of this model has {self.config.factors} values (its factors), "
                f"got {rep.shape[0]}; pass the result of fold_in"
            )
        return rep

    def score_folded(self, user_repr: np.ndarray) -> torch.Tensor:
        """Scores (n_items,) float32 on `device` of a `fold_in` representation: Y x."""
        y = self._factors()[1]
        rep = torch.from_numpy(self._check_repr(user_repr)).to(self.device)
        with torch.no_grad():
            return y @ rep

    def user_vector(self, user_repr: np.ndarray) -> np.ndarray:
        """The folded user's factors x (d,) float32, in the space of `item_factors()`."""
        self._check_fitted()
        return self._check_repr(user_repr).copy()

    def explain(self, ratings: Mapping[int, float], item_idx: int) -> list[tuple[int, float]]:
        """Exact contribution of each rated item j to a new user's score of `item_idx`.

        With W = (YᵀY + Y_uᵀ(C_u - I)Y_u + λI)⁻¹ (the user's fold-in system), the score is
        y_iᵀ x = Σ_j c_uj (y_iᵀ W y_j) p_uj, so item j contributes c_uj (y_iᵀ W y_j) p_uj
        (Hu et al. 2008, section 5). Items rated below `min_rating` contribute 0. Returns
        [(rated_item_idx, contribution)] sorted largest (most positive) first, ties by item index;
        the contributions sum to the folded user's score of `item_idx` (float64 arithmetic).
        """
        return self.explain_many(ratings, np.array([int(item_idx)], dtype=np.int64))[0]

    def explain_many(self, ratings: Mapping[int, float], item_idx: np.ndarray) -> list[list[tuple[int, float]]]:
        """`explain(ratings, i)` for every i of `item_idx` ((n,) int), aligned with it, from one
        solve: V = Y_u W (m, d) is computed once, then item i's contributions are
        c_uj (V y_i)_j p_uj. Each V y_i is its own (m, d) x (d,) product, so an item's figures do
        not depend on which other items are asked for, and `explain` (which calls this with one
        item) gives exactly the same numbers."""
        self._check_fitted()
        wanted = np.asarray(item_idx)
        if wanted.size and not np.issubdtype(wanted.dtype, np.integer):
            raise TypeError(f"item_idx must hold integer item indices, got dtype {wanted.dtype}")
        wanted = wanted.astype(np.int64).reshape(-1)
        self._check_indices(None, wanted)
        items, confidence, rated, system, y = self._user_system(ratings)
        if len(items) == 0:
            return [[] for _ in wanted.tolist()]
        weighted_rated = np.ascontiguousarray(np.linalg.solve(system, rated.T).T)  # V = Y_u W, W = A⁻¹ symmetric
        explanations = []
        for item in wanted.tolist():
            contributions = confidence * (weighted_rated @ y[item])
            order = np.lexsort((items, -contributions))
            explanations.append([(int(items[j]), float(contributions[j])) for j in order])
        return explanations

    # --- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        x, y = self._factors()
        return {"user_factors": x, "item_factors": y}

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        x, y = state["user_factors"], state["item_factors"]
        if x.ndim != 2 or y.ndim != 2 or x.shape[1] != self.config.factors or y.shape[1] != self.config.factors:
            raise ValueError(
                f"weights have factor shapes {tuple(x.shape)} and {tuple(y.shape)}, config says factors={self.config.factors}"
            )
        if x.shape[0] != self.n_users or y.shape[0] != self.n_items:
            raise ValueError(
                f"weights cover {x.shape[0]} users x {y.shape[0]} items, the id maps {self.n_users} x {self.n_items}"
            )
        self._user_factors = x.float().contiguous()
        self._item_factors = y.float().contiguous()
        self._host_cache = None

"""Evaluation metrics: rating error, full-ranking top-k metrics and next-item metrics.

Every metric is a pure function of arrays or of a scoring function; nothing here trains,
caches or prints. Definitions, stated once and used throughout:

Rating error
    `rmse = sqrt(mean((y_true - y_pred)^2))`, `mae = mean(|y_true - y_pred|)`, in float64,
    over all given pairs with equal weight. Predictions are used as they are (no clipping).

Full ranking (`ranking_metrics`)
    For each user, the *candidates* are all items of the catalogue except the user's
    training items. The *relevant* items are the user's test items that are not training
    items (a test item that also appears in train is excluded from the ranking like every
    training item, so it is dropped from the relevant set rather than counted as a miss;
    duplicate test pairs count once). Users with no relevant item are skipped; every figure
    is the unweighted mean over the remaining users.

    Ties are pessimistic: the candidates are ordered by score, highest first, and a relevant
    item tied with non-relevant items is placed *after* all of them (the order among tied
    relevant items does not change any metric). So a relevant item with score s sits at
    rank `1 + (number of relevant items scored strictly higher, or tied and placed earlier)
    + (number of non-relevant candidates scoring >= s)`. A model that gives every item the
    same score therefore gets no credit, instead of a perfect score as under optimistic ties.

    With m relevant items at ranks p_1 < p_2 < ... < p_m and hits = #{j : p_j <= k}:
      precision@k = hits / k                (k even when fewer than k candidates exist)
      recall@k    = hits / m
      ndcg@k      = sum_{p_j <= k} 1 / log2(p_j + 1)  /  sum_{i=1..min(k, m)} 1 / log2(i + 1)
      map@k       = sum_{p_j <= k} precision@p_j / min(k, m),  precision@p_j = j / p_j
      hit@k       = 1 if hits > 0 else 0
      mrr         = 1 / p_1  (rank of the best-ranked relevant item in the full ranking, no cut-off)

Next item (`sequence_metrics`)
    One target item per history window (token windows of `recengine.data.sequences`). The
    candidates are all items, or with `exclude_history` all items but the window's own (the
    target itself always stays a candidate). rank = 1 + number of other candidates scoring
    >= the target (pessimistic ties, as above); hit@k = [rank <= k],
    ndcg@k = [rank <= k] / log2(rank + 1), mrr = 1 / rank; means over windows.

Scores may be any finite or infinite float; NaN scores are an error (a diverged model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch

from recengine.data.dataset import Dataset
from recengine.data.sequences import PAD, from_token

if TYPE_CHECKING:  # pragma: no cover - only for type hints
    from recengine.models.base import Recommender

__all__ = [
    "RANKING_METRICS",
    "SEQUENCE_METRICS",
    "evaluate_model",
    "evaluate_predictions",
    "mae",
    "ranking_metrics",
    "relevant_items",
    "rmse",
    "sequence_metrics",
    "sequence_mrr",
]

#: Metric names `ranking_metrics` knows, in the order its result lists them.
RANKING_METRICS = ("precision", "recall", "ndcg", "map", "hit", "mrr")
#: Metric names `sequence_metrics` knows, in the order its result lists them.
SEQUENCE_METRICS = ("hit", "ndcg", "mrr")

ScoreFn = Callable[[np.ndarray], torch.Tensor]

_BYTES_PER_MB = 1 << 20


# --- rating error -----------------------------------------------------------------------------
def _as_float64(values: np.ndarray | torch.Tensor | Sequence[float], label: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{label} must be a 1-D array of ratings, got shape {array.shape}")
    return array


def _paired(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    truth, predicted = _as_float64(y_true, "y_true"), _as_float64(y_pred, "y_pred")
    if truth.shape != predicted.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {len(truth)} and {len(predicted)}; "
            "predict exactly one value per test pair"
        )
    if truth.size == 0:
        raise ValueError("cannot compute a rating error over zero pairs; the test set is empty")
    return truth, predicted


def rmse(y_true: np.ndarray | torch.Tensor, y_pred: np.ndarray | torch.Tensor) -> float:
    """Root mean squared error `sqrt(mean((y_true - y_pred)^2))` over 1-D arrays of equal length.

    Computed in float64; NaN predictions give NaN. ValueError for empty or mismatched inputs.
    """
    truth, predicted = _paired(y_true, y_pred)
    return float(np.sqrt(np.mean(np.square(truth - predicted))))


def mae(y_true: np.ndarray | torch.Tensor, y_pred: np.ndarray | torch.Tensor) -> float:
    """Mean absolute error `mean(|y_true - y_pred|)` over 1-D arrays of equal length (float64)."""
    truth, predicted = _paired(y_true, y_pred)
    return float(np.mean(np.abs(truth - predicted)))


def evaluate_predictions(y_true: np.ndarray | torch.Tensor, y_pred: np.ndarray | torch.Tensor) -> dict[str, float]:
    """`{"rmse": ..., "mae": ...}` of predicted against true ratings."""
    return {"rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred)}


# --- helpers for the ranking metrics ----------------------------------------------------------
def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_memory(memory_mb: float) -> float:
    if not isinstance(memory_mb, (int, float, np.integer, np.floating)) or not memory_mb > 0:
        raise ValueError(f"memory_mb must be a positive number of mebibytes, got {memory_mb!r}")
    return float(memory_mb)


def _check_metric_names(metrics: Iterable[str] | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if metrics is None:
        return allowed
    if isinstance(metrics, str):
        metrics = [metrics]
    wanted = set()
    for name in metrics:
        if name not in allowed:
            raise ValueError(f"metrics must be drawn from {list(allowed)}, got {name!r}")
        wanted.add(name)
    if not wanted:
        raise ValueError(f"metrics must name at least one of {list(allowed)}, got an empty list")
    return tuple(name for name in allowed if name in wanted)


def _result_key(name: str, k: int) -> str:
    return name if name == "mrr" else f"{name}@{k}"


def _ragged_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten CSR segments of `rows`: (position of the row in `rows`, index into the CSR values).

    Both int64 of length `sum(indptr[rows + 1] - indptr[rows])`, grouped by row in `rows` order.
    """
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    total = int(counts.sum())
    row_position = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    segment_start = np.repeat(np.cumsum(counts) - counts, counts)
    flat = np.repeat(starts, counts) + (np.arange(total, dtype=np.int64) - segment_start)
    return row_position, flat


def _check_same_catalogue(train: Dataset, test: Dataset) -> None:
    if train.n_items != test.n_items or train.n_users != test.n_users:
        raise ValueError(
            f"train ({train.n_users} users x {train.n_items} items) and test ({test.n_users} users x "
            f"{test.n_items} items) must share id maps; build both with recengine.data.splits"
        )


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique through a sort: numpy 2.4's hashing unique is far slower)."""
    ordered = np.sort(values)
    if ordered.size:
        ordered = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
    return ordered


def _unique_pairs(dataset: Dataset) -> np.ndarray:
    """Sorted unique `user * n_items + item` keys (int64) of a Dataset's interactions."""
    return _sorted_unique(dataset.users.astype(np.int64) * dataset.n_items + dataset.items)


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean mask: which of `keys` occur in the sorted array `sorted_keys`."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    position = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[position] == keys


def relevant_items(train: Dataset, test: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Each user's relevant items for ranking: test items that are not training items.

    Returns a CSR `(indptr int64 (n_users + 1), items int64)`: user u's relevant items are
    `items[indptr[u]:indptr[u + 1]]`, sorted and unique.
    """
    _check_same_catalogue(train, test)
    test_keys = _unique_pairs(test)
    keys = test_keys[~_contains(_unique_pairs(train), test_keys)]
    users, items = np.divmod(keys, test.n_items)
    indptr = np.zeros(test.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=test.n_users), out=indptr[1:])
    return indptr, items


def _call_scores(score_fn: ScoreFn, batch: np.ndarray, n_items: int | None, what: str) -> torch.Tensor:
    """Call `score_fn` without autograd and check it returned an (len(batch), n_items) score matrix."""
    with torch.no_grad():
        scores = score_fn(batch)
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(np.asarray(scores))
    expected = (len(batch), n_items if n_items is not None else "n_items")
    if scores.ndim != 2 or scores.shape[0] != len(batch) or (n_items is not None and scores.shape[1] != n_items):
        raise ValueError(
            f"score_fn must return a tensor of shape {expected} for {len(batch)} {what}, "
            f"got shape {tuple(scores.shape)}; is the model fitted on this dataset?"
        )
    scores = scores.detach().to(torch.float32)
    if bool(torch.isnan(scores.amax(dim=1)).any()):  # a max is NaN exactly when its row holds a NaN
        raise ValueError(
            f"score_fn returned NaN scores for some of {len(batch)} {what}; the model has diverged "
            "(retrain it, e.g. with a lower learning rate)"
        )
    return scores


def _count_at_least(values: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Per row, how many of `values` (n, m) are >= `threshold` (n,): int64 (n,) on their device.

    On CPU through numpy, whose compare-and-count is several times faster than torch's there.
    """
    if values.device.type == "cpu":
        counts = np.count_nonzero(values.numpy() >= threshold.numpy()[:, None], axis=1)
        return torch.from_numpy(counts.astype(np.int64, copy=False))
    return (values >= threshold[:, None]).sum(dim=1)


def _rows_per_chunk(memory_mb: float, n_items: int, copies: int) -> int:
    """Rows such that `copies` float32 (rows, n_items) matrices fit in `memory_mb` (at least 1)."""
    return max(1, int(memory_mb * _BYTES_PER_MB) // (copies * 4 * max(n_items, 1)))


# --- full ranking -----------------------------------------------------------------------------
def ranking_metrics(
    score_fn: ScoreFn,
    train: Dataset,
    test: Dataset,
    k: int = 10,
    memory_mb: float = 256,
    metrics: Iterable[str] | None = None,
    users: np.ndarray | Sequence[int] | None = None,
) -> dict[str, float]:
    """Full-ranking top-k metrics over all items, training items excluded (see the module docstring).

    score_fn: `score_fn(user_idx int64 (n,)) -> Tensor (n, n_items)` float, on any device;
        for a model this is `model.score_users`. Called without autograd.
    train / test: the two parts of a split (same id maps). Training items are excluded from
        each user's ranking; the relevant items are `relevant_items(train, test)`.
    k: the cut-off of precision, recall, ndcg, map and hit (mrr has none).
    memory_mb: users are scored in chunks so that a chunk's score matrix and its masked copy
        (2 x n_chunk x n_items float32) stay within this many MiB (one user at least).
    metrics: a subset of `RANKING_METRICS` to compute (default all).
    users: evaluate only these user indices (default every user with a relevant item);
        users without a relevant item are skipped either way, duplicates count once.

    Returns `{"precision@10", "recall@10", "ndcg@10", "map@10", "hit@10", "mrr"}` (k substituted,
    restricted to `metrics`), each a mean over the evaluated users. ValueError when no user has
    a relevant item.
    """
    k = _check_k(k)
    memory_mb = _check_memory(memory_mb)
    wanted = _check_metric_names(metrics, RANKING_METRICS)
    relevant_indptr, relevant = relevant_items(train, test)
    n_items, n_users = train.n_items, train.n_users
    n_relevant = np.diff(relevant_indptr)

    if users is None:
        evaluated = np.flatnonzero(n_relevant > 0).astype(np.int64)
    else:
        evaluated = _sorted_unique(np.asarray(users, dtype=np.int64).ravel())
        if evaluated.size and (evaluated[0] < 0 or evaluated[-1] >= n_users):
            raise ValueError(
                f"users must be user indices in 0..{n_users - 1}, got values from {evaluated[0]} to {evaluated[-1]}"
            )
        evaluated = evaluated[n_relevant[evaluated] > 0]
    if evaluated.size == 0:
        which = "the given users" if users is not None else "the users"
        raise ValueError(
            f"no user to evaluate: none of {which} has a test item outside their training items "
            f"({test!r} against {train!r}); check that the test part is not empty"
        )

    ranking = _Ranking.build(train, relevant_indptr, relevant, k)
    totals = dict.fromkeys(wanted, 0.0)
    rows = _rows_per_chunk(memory_mb, n_items, copies=2)
    for start in range(0, evaluated.size, rows):
        chunk = evaluated[start : start + rows]
        per_user = ranking.chunk_metrics(_call_scores(score_fn, chunk, n_items, "users"), chunk, wanted)
        for name, values in per_user.items():
            totals[name] += float(values.sum())
    return {_result_key(name, k): totals[name] / evaluated.size for name in wanted}


@dataclass(frozen=True)
class _Ranking:
    """What `ranking_metrics` needs per user, as CSR arrays over all users (int64)."""

    k: int
    relevant_indptr: np.ndarray  # (n_users + 1,) relevant items of user u: relevant[indptr[u]:indptr[u + 1]]
    relevant: np.ndarray
    train_indptr: np.ndarray  # (n_users + 1,) distinct training items, likewise
    train_items: np.ndarray
    n_relevant: np.ndarray  # (n_users,)
    n_others: np.ndarray  # (n_users,) candidates that are not relevant
    ideal_dcg: np.ndarray  # (k + 1,) ideal_dcg[n]: DCG of n relevant items at the top

    @classmethod
    def build(cls, train: Dataset, relevant_indptr: np.ndarray, relevant: np.ndarray, k: int) -> "_Ranking":
        n_users, n_items = train.n_users, train.n_items
        train_keys = _unique_pairs(train)
        n_train = np.bincount(train_keys // n_items, minlength=n_users)
        train_indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(n_train, out=train_indptr[1:])
        n_relevant = np.diff(relevant_indptr)
        discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
        return cls(
            k, relevant_indptr, relevant, train_indptr, train_keys % n_items, n_relevant,
            n_items - n_train - n_relevant, np.concatenate(([1.0], np.cumsum(discounts))),
        )

    def chunk_metrics(self, scores: torch.Tensor, chunk: np.ndarray, wanted: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Each metric for each user of `chunk`: float64 (len(chunk),) on the scores' device.

        scores: (len(chunk), n_items) float32, the raw scores of the chunk's users.
        """
        k, device, n_chunk = self.k, scores.device, len(chunk)
        rel_row, rel_flat = _ragged_rows(self.relevant_indptr, chunk)
        train_row, train_flat = _ragged_rows(self.train_indptr, chunk)
        rel_row_t = torch.from_numpy(rel_row).to(device)
        rel_scores = scores[rel_row_t, torch.from_numpy(self.relevant[rel_flat]).to(device)]
        # A copy with training and relevant items at -inf: the scores of the non-relevant candidates.
        excluded = (
            torch.from_numpy(np.concatenate((train_row, rel_row))).to(device),
            torch.from_numpy(np.concatenate((self.train_items[train_flat], self.relevant[rel_flat]))).to(device),
        )
        others = scores.index_put(excluded, torch.tensor(-math.inf, device=device))
        others_count = torch.from_numpy(self.n_others[chunk]).to(device)
        chunk_relevant = torch.from_numpy(self.n_relevant[chunk]).to(device)

        # Each user's relevant items by decreasing score; j = 1, 2, ... within the user.
        by_score = torch.argsort(rel_scores, descending=True, stable=True)
        sorted_scores = rel_scores[by_score[torch.argsort(rel_row_t[by_score], stable=True)]]
        first_of_row = torch.from_numpy(np.cumsum(self.n_relevant[chunk]) - self.n_relevant[chunk]).to(device)
        j = torch.arange(len(rel_row), device=device) - first_of_row[rel_row_t] + 1
        per_user: dict[str, torch.Tensor] = {}

        if any(name != "mrr" for name in wanted):
            # Rank of the j-th relevant item: j + non-relevant candidates scoring >= it. That count
            # is exact from the row's top k while it is below k, which is all a rank <= k needs.
            best_others = torch.topk(others, min(k, others.shape[1]), dim=1, sorted=True).values
            ahead = torch.minimum(_count_at_least(best_others[rel_row_t], sorted_scores), others_count[rel_row_t])
            rank = (j + ahead).to(torch.float64)
            hit = rank <= k

            def per_row(values: torch.Tensor) -> torch.Tensor:
                return torch.zeros(n_chunk, dtype=torch.float64, device=device).index_add_(0, rel_row_t, values)

            hits = per_row(hit.to(torch.float64))
            capped = torch.clamp(chunk_relevant, max=k)
            if "precision" in wanted:
                per_user["precision"] = hits / k
            if "recall" in wanted:
                per_user["recall"] = hits / chunk_relevant
            if "ndcg" in wanted:
                dcg = per_row(torch.where(hit, 1.0 / torch.log2(rank + 1.0), 0.0))
                per_user["ndcg"] = dcg / torch.from_numpy(self.ideal_dcg).to(device)[capped]
            if "map" in wanted:
                per_user["map"] = per_row(torch.where(hit, j / rank, 0.0)) / capped
            if "hit" in wanted:
                per_user["hit"] = (hits > 0).to(torch.float64)

        if "mrr" in wanted:
            best = sorted_scores[first_of_row]  # each user's highest-scored relevant item
            ahead = torch.minimum(_count_at_least(others, best), others_count)
            per_user["mrr"] = 1.0 / (1.0 + ahead.to(torch.float64))
        return per_user


def evaluate_model(
    model: "Recommender",
    train: Dataset,
    test: Dataset,
    k: int = 10,
    memory_mb: float = 256,
    batch_size: int = 1 << 16,
) -> dict[str, float]:
    """Every metric that applies to a fitted model on a split.

    Explicit models (`model.explicit`) get `rmse` and `mae` of `model.predict` on the test
    pairs (predicted `batch_size` pairs at a time); every model gets `ranking_metrics` with
    `model.score_users`. Keys: rmse, mae (explicit only), precision@k, recall@k, ndcg@k,
    map@k, hit@k, mrr.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    results: dict[str, float] = {}
    if getattr(model, "explicit", False):
        users, items = test.users.astype(np.int64), test.items.astype(np.int64)
        predicted = np.empty(len(test), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(test), batch_size):
                stop = start + batch_size
                predicted[start:stop] = np.asarray(model.predict(users[start:stop], items[start:stop]), dtype=np.float64)
        results.update(evaluate_predictions(test.ratings, predicted))
    results.update(ranking_metrics(model.score_users, train, test, k=k, memory_mb=memory_mb))
    return results


# --- next item --------------------------------------------------------------------------------
def sequence_metrics(
    score_fn: Callable[[np.ndarray], torch.Tensor],
    histories: np.ndarray,
    targets: np.ndarray,
    k: int = 10,
    exclude_history: bool = False,
    memory_mb: float = 256,
    metrics: Iterable[str] | None = None,
) -> dict[str, float]:
    """Next-item metrics: hit@k, ndcg@k and mrr of each window's target among all items.

    histories: int64 (n, L) token windows as `recengine.data.sequences` makes them (item i is
        token i + 1, `PAD` = 0 pads on the left), passed to `score_fn` as they are.
    targets: int64 (n,) the item index (not token) that came next: a column of the scores.
    score_fn: `score_fn(histories (b, L)) -> Tensor (b, n_items)` float, any device.
    exclude_history: when True the items of each window (padding aside) are removed from the
        candidates, except the target itself, which is always ranked.
    memory_mb: windows are scored in chunks whose float32 score matrix stays within this many
        MiB; the first chunk is a single window, which tells n_items.

    rank = 1 + number of other candidates scoring >= the target (pessimistic ties);
    hit@k = [rank <= k], ndcg@k = [rank <= k] / log2(rank + 1), mrr = 1 / rank; means over windows.
    Returns `{"hit@10", "ndcg@10", "mrr"}` (k substituted, restricted to `metrics`).
    """
    k = _check_k(k)
    memory_mb = _check_memory(memory_mb)
    wanted = _check_metric_names(metrics, SEQUENCE_METRICS)
    histories, targets = np.asarray(histories), np.asarray(targets)
    if histories.ndim != 2 or not np.issubdtype(histories.dtype, np.integer):
        raise ValueError(
            f"histories must be an integer array (n_windows, max_length), got {histories.dtype} {histories.shape}"
        )
    if targets.shape != (len(histories),) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"targets must be an integer array of one item per window, shape ({len(histories)},), "
            f"got {targets.dtype} {targets.shape}"
        )
    if len(histories) == 0:
        raise ValueError("cannot compute next-item metrics over zero windows")
    histories, targets = histories.astype(np.int64, copy=False), targets.astype(np.int64, copy=False)

    totals = dict.fromkeys(wanted, 0.0)
    n_items: int | None = None
    start, rows = 0, 1
    while start < len(histories):
        window, target = histories[start : start + rows], targets[start : start + rows]
        scores = _call_scores(score_fn, window, n_items, "windows")
        if n_items is None:
            n_items = scores.shape[1]
            if targets.min() < 0 or targets.max() >= n_items:
                raise ValueError(
                    f"targets must be item indices in 0..{n_items - 1}, "
                    f"got values from {targets.min()} to {targets.max()}"
                )
            rows = _rows_per_chunk(memory_mb, n_items, copies=1)
        rank = _target_ranks(scores, window if exclude_history else None, target, n_items)
        inside = rank <= k
        if "hit" in wanted:
            totals["hit"] += float(inside.sum())
        if "ndcg" in wanted:
            totals["ndcg"] += float(torch.where(inside, 1.0 / torch.log2(rank + 1.0), 0.0).sum())
        if "mrr" in wanted:
            totals["mrr"] += float((1.0 / rank).sum())
        start += len(window)
    return {_result_key(name, k): totals[name] / len(histories) for name in wanted}


def _target_ranks(scores: torch.Tensor, windows: np.ndarray | None, targets: np.ndarray, n_items: int) -> torch.Tensor:
    """Pessimistic rank of each target: float64 (n,) on the scores' device.

    scores: (n, n_items) float32; windows: (n, L) tokens whose items leave the candidates
    (the target aside), or None to rank among all items; targets: (n,) item indices.
    """
    device = scores.device
    row = torch.arange(len(targets), device=device)
    target_score = scores[row, torch.from_numpy(targets).to(device)]
    # Every item scoring >= the target, the target itself aside ...
    ahead = _count_at_least(scores, target_score) - 1
    if windows is not None:
        # ... less the distinct history items (target and padding aside) among them.
        items = np.sort(_history_items(windows, n_items), axis=1)
        keep = (items >= 0) & (items != targets[:, None])
        keep[:, 1:] &= items[:, 1:] != items[:, :-1]
        keep_t = torch.from_numpy(keep).to(device)
        history_scores = scores[row[:, None], torch.from_numpy(np.where(keep, items, 0)).to(device)]
        ahead = ahead - ((history_scores >= target_score[:, None]) & keep_t).sum(dim=1)
    return ahead.to(torch.float64) + 1.0


def sequence_mrr(
    score_fn: Callable[[np.ndarray], torch.Tensor],
    histories: np.ndarray,
    targets: np.ndarray,
    exclude_history: bool = False,
    memory_mb: float = 256,
) -> float:
    """Mean over windows of 1 / rank of the target among all items (see `sequence_metrics`)."""
    result = sequence_metrics(
        score_fn, histories, targets, exclude_history=exclude_history, memory_mb=memory_mb, metrics=["mrr"]
    )
    return result["mrr"]


def _history_items(windows: np.ndarray, n_items: int) -> np.ndarray:
    """Item indices (int64, same shape) of the tokens in `windows`; -1 where there is padding."""
    items = from_token(windows)
    if items.size and (items.min() < -1 or items.max() >= n_items):
        raise ValueError(
            f"histories must hold tokens in {PAD}..{n_items} (item index + 1, {PAD} = padding, see "
            f"recengine.data.sequences), got values from {int(windows.min())} to {int(windows.max())}"
        )
    return items  # from_token(PAD) == -1

"""Train/test splits of a `Dataset`: random, canonical ml-100k folds, by user, leave-last-out.

Every split returns a `Split(name, train, test)` whose parts are ``dataset.subset(mask, ...)``
of the same dataset, so they share its id maps and catalogue (an index means the same item
in train, test and the full data) and keep its row order. Train and test partition the rows:
every row is in exactly one part. Random splits take an integer `seed` and use a local
``np.random.default_rng(seed)``; the same seed gives the same split.

`make_split(dataset, name, seed)` picks a split by its name (`SPLIT_NAMES`):

=========  ==================================================================================
random     20 % of the interactions, drawn uniformly, go to test (`split_random`).
user       20 % of the users go to test with all their interactions (`split_by_user`),
           for next-item evaluation on unseen histories.
last       each user's latest interaction goes to test (`split_leave_last_out`).
u1 .. u5   the canonical ml-100k five-fold cross-validation folds (80 % / 20 %),
ua, ub     and the ml-100k folds with exactly 10 ratings per user in test (`split_fold`).
=========  ==================================================================================

`split_validation(train, fraction, seed)` carves a validation part out of a training part
for hyper-parameter selection and early stopping (parts "fit" and "valid").
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from recengine.data.dataset import Dataset

__all__ = [
    "FOLD_NAMES",
    "SPLIT_NAMES",
    "Split",
    "available_splits",
    "make_split",
    "split_by_user",
    "split_fold",
    "split_leave_last_out",
    "split_random",
    "split_validation",
]

#: The canonical ml-100k folds, read from `u1.base`/`u1.test` ... `ub.base`/`ub.test`.
FOLD_NAMES = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
#: Every name `make_split` accepts.
SPLIT_NAMES = ("random", "user", "last") + FOLD_NAMES


class Split(NamedTuple):
    """A named train/test pair over the same dataset (same id maps and catalogue).

    `name` is the name `make_split` accepts for this kind of split ("random", "user", "last",
    "u1", ...; "validation" for `split_validation`).
    """

    name: str
    train: Dataset
    test: Dataset


def split_random(dataset: Dataset, test_fraction: float = 0.2, seed: int = 42) -> Split:
    """Hold out ``round(len(dataset) * test_fraction)`` interactions drawn uniformly at random.

    Python's `round` is used (ties to even), so 10 rows at 0.25 give 2 test rows.
    """
    _check_fraction("test_fraction", test_fraction)
    test = _random_rows(len(dataset), test_fraction, seed)
    return Split("random", dataset.subset(~test, "train"), dataset.subset(test, "test"))


def split_validation(train: Dataset, fraction: float = 0.1, seed: int = 42) -> Split:
    """Random split of a training part into ("fit", "valid") for hyper-parameter selection.

    ``round(len(train) * fraction)`` interactions go to the "valid" part (the Split's `test`),
    the rest to the "fit" part (its `train`). Name "validation".
    """
    _check_fraction("fraction", fraction)
    valid = _random_rows(len(train), fraction, seed)
    return Split("validation", train.subset(~valid, "fit"), train.subset(valid, "valid"))


def split_by_user(dataset: Dataset, test_fraction: float = 0.2, seed: int = 42) -> Split:
    """Hold out whole users: ``round(n * test_fraction)`` of the n users who have interactions,
    drawn uniformly, go to test with all their interactions; no user is in both parts.
    """
    _check_fraction("test_fraction", test_fraction)
    present = np.flatnonzero(np.bincount(dataset.users, minlength=dataset.n_users))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(present, size=round(len(present) * test_fraction), replace=False)
    is_test_user = np.zeros(dataset.n_users, dtype=bool)
    is_test_user[chosen] = True
    test = is_test_user[dataset.users]
    return Split("user", dataset.subset(~test, "train"), dataset.subset(test, "test"))


def split_leave_last_out(dataset: Dataset, n: int = 1) -> Split:
    """Each user's latest ``min(n, count - 1)`` interactions go to test.

    "Latest" is by timestamp; among equal timestamps a later row counts as later (a stable
    order). A user with fewer than 2 interactions stays entirely in train, and every user
    keeps at least one interaction in train. Deterministic (no seed).

    Vectorised: one sort of packed (user, timestamp) keys finds each user's cut-off key; only
    the rows tied with a cut-off are ordered by row number.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (interactions held out per user), got {n!r}")
    if len(dataset) == 0:
        nothing = np.zeros(0, dtype=bool)
        return Split("last", dataset.subset(nothing, "train"), dataset.subset(nothing, "test"))
    users = dataset.users.astype(np.int64)
    counts = np.bincount(users, minlength=dataset.n_users)
    held = np.where(counts >= 2, np.minimum(n, counts - 1), 0)
    key = _user_time_key(users, dataset.timestamps, dataset.n_users)
    sorted_key = np.sort(key)
    ends = np.cumsum(counts)
    never = np.iinfo(np.int64).max  # cut-off of users holding nothing out
    cutoff = np.where(held > 0, sorted_key[np.minimum(ends - held, len(key) - 1)], never)
    test = key > cutoff[users]
    # Rows tied with the cut-off: take the last `held - strictly_later` of them in row order.
    strictly_later = ends - np.searchsorted(sorted_key, cutoff, side="right")
    tied = np.flatnonzero(key == cutoff[users])  # increasing row order
    if len(tied):
        tied_users = users[tied]
        order = np.argsort(tied_users, kind="stable")
        tied, tied_users = tied[order], tied_users[order]
        tied_counts = np.bincount(tied_users, minlength=dataset.n_users)
        from_end = (np.cumsum(tied_counts) - 1)[tied_users] - np.arange(len(tied))  # 0 = last tied row
        test[tied[from_end < (held - strictly_later)[tied_users]]] = True
    return Split("last", dataset.subset(~test, "train"), dataset.subset(test, "test"))


def split_fold(dataset: Dataset, fold: str) -> Split:
    """The canonical ml-100k fold `fold` ("u1".."u5", "ua", "ub"), read from the dataset's folder.

    The files ``<fold>.base`` and ``<fold>.test`` in `dataset.source` list (user id, item id,
    rating, timestamp) with raw MovieLens ids, tab separated; each row of the dataset is placed
    in the part whose file lists its (user, item) pair. Raises ValueError when the dataset has
    no such files or the files do not match the dataset's rows.
    """
    if fold not in FOLD_NAMES:
        raise ValueError(f"fold must be one of {FOLD_NAMES}, got {fold!r}")
    paths = _fold_paths(dataset, fold)
    if paths is None:
        raise ValueError(
            f"split {fold!r} exists only for ml-100k (its canonical folds); use 'random', 'user' or 'last' "
            f"(dataset {dataset.name!r} has no {fold}.base/{fold}.test"
            + (f" in {dataset.source})" if dataset.source is not None else ": it was not read from a folder)")
        )
    row_keys = dataset.users.astype(np.int64) * dataset.n_items + dataset.items
    masks = []
    for path in paths:
        pairs = _read_fold_pairs(path, dataset)
        mask = np.isin(row_keys, pairs)
        if mask.sum() != len(pairs):
            raise ValueError(
                f"{path} lists {len(pairs)} ratings but {int(mask.sum())} rows of {dataset!r} match them; "
                "fold files apply only to the full, unfiltered ml-100k dataset"
            )
        masks.append(mask)
    train, test = masks
    if (train & test).any() or not (train | test).all():
        raise ValueError(
            f"{paths[0].name} and {paths[1].name} do not partition the {len(dataset)} rows of {dataset!r} "
            f"({int((train & test).sum())} rows in both, {int((~(train | test)).sum())} in neither)"
        )
    return Split(fold, dataset.subset(train, "train"), dataset.subset(test, "test"))


def make_split(dataset: Dataset, name: str, seed: int = 42) -> Split:
    """The split called `name` (one of `SPLIT_NAMES`) with default fractions; see the module docstring.

    `seed` applies to "random" and "user"; "last" and the folds are deterministic.
    """
    if name == "random":
        return split_random(dataset, seed=seed)
    if name == "user":
        return split_by_user(dataset, seed=seed)
    if name == "last":
        return split_leave_last_out(dataset)
    if name in FOLD_NAMES:
        return split_fold(dataset, name)
    raise ValueError(f"split must be one of {SPLIT_NAMES}, got {name!r}")


def available_splits(dataset: Dataset) -> list[str]:
    """Split names usable on `dataset`: "random", "user", "last", plus the folds whose files exist."""
    return ["random", "user", "last"] + [fold for fold in FOLD_NAMES if _fold_paths(dataset, fold) is not None]


# --- helpers ----------------------------------------------------------------------------------
def _check_fraction(label: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{label} must be strictly between 0 and 1, got {value!r}")


def _random_rows(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask (n_rows,) with exactly round(n_rows * fraction) True entries, uniformly placed."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(n_rows, dtype=bool)
    mask[rng.choice(n_rows, size=round(n_rows * fraction), replace=False)] = True
    return mask


def _user_time_key(users: np.ndarray, timestamps: np.ndarray, n_users: int) -> np.ndarray:
    """int64 keys ordered like (user, timestamp): ``user << bits | (timestamp - min)``.

    When the timestamp range is too wide to pack next to the user, timestamps are replaced by
    their dense rank (same order, fewer bits).
    """
    if len(users) == 0:
        return np.zeros(0, dtype=np.int64)
    time = timestamps.astype(np.int64) - timestamps.min()
    user_bits = max(1, (n_users - 1).bit_length())
    time_bits = max(1, int(time.max()).bit_length())
    if user_bits + time_bits > 62:
        distinct = np.sort(time)
        distinct = distinct[np.concatenate(([True], distinct[1:] != distinct[:-1]))]
        time = np.searchsorted(distinct, time)
        time_bits = max(1, (len(distinct) - 1).bit_length())
    return (users << time_bits) | time


def _fold_paths(dataset: Dataset, fold: str) -> tuple[Path, Path] | None:
    """(base, test) files of `fold` in the dataset's folder, or None when either is missing."""
    if dataset.source is None:
        return None
    base, test = Path(dataset.source) / f"{fold}.base", Path(dataset.source) / f"{fold}.test"
    return (base, test) if base.is_file() and test.is_file() else None


def _read_fold_pairs(path: Path, dataset: Dataset) -> np.ndarray:
    """(user, item) pairs of one fold file as keys ``user * n_items + item`` (int64)."""
    frame = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "timestamp"], dtype=np.int64)
    raw_users, raw_items = frame["user"].to_numpy(), frame["item"].to_numpy()
    users = dataset.user_map.indices_of(raw_users.astype(dataset.user_map.ids.dtype, copy=False))
    items = dataset.item_map.indices_of(raw_items.astype(dataset.item_map.ids.dtype, copy=False))
    unknown = (users < 0) | (items < 0)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise ValueError(
            f"{path} row {row + 1} has user {raw_users[row]} / item {raw_items[row]}, unknown to {dataset!r}; "
            "fold files apply only to the ml-100k dataset read from the same folder"
        )
    return users * dataset.n_items + items

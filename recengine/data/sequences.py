"""Per-user, time-ordered item sequences and fixed-length windows for next-item models.

Token convention (used by every sequence model; keep to these helpers):

* Inside windows, item index ``i`` is stored as token ``i + 1``, and token ``0`` (`PAD`) is
  padding. `to_token` / `from_token` convert (`from_token(PAD) == -1`), and an embedding
  table for windows needs `n_tokens(n_items) == n_items + 1` rows with ``padding_idx=PAD``.
* Windows are **left-padded**: the most recent item is always in the last column, so
  ``window[:, -1]`` is the latest item and a model reads history left to right.
* Windows are int64 (what `torch.nn.Embedding` indexes with).

A user's sequence is their items ordered by timestamp, ties kept in row order (a stable
order). `windows` cuts sequences the way Spotlight's `Interactions.to_sequence` does: the first
window ends at the end of the sequence, each next one ends `step` items earlier, and the
earliest, shorter window is left-padded; windows with fewer than `min_length` real items are
dropped. For example, with items ``a b c d e`` (tokens shown as letters), ``max_length=3`` and
``step=2`` the windows are ``[c d e]``, ``[a b c]``, ``[0 0 a]``, and ``min_length=2`` drops
the last.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recengine.data.dataset import Dataset

__all__ = ["PAD", "from_token", "last_window", "last_windows", "n_tokens", "to_token", "user_sequences", "windows"]

#: Padding token in windows; item index i is token i + 1.
PAD = 0


def to_token(items: np.ndarray | Sequence[int]) -> np.ndarray:
    """Tokens (int64) of item indices: ``item + 1``."""
    return np.asarray(items, dtype=np.int64) + 1


def from_token(tokens: np.ndarray | Sequence[int]) -> np.ndarray:
    """Item indices (int64) of tokens: ``token - 1`` (so `PAD` becomes -1)."""
    return np.asarray(tokens, dtype=np.int64) - 1


def n_tokens(n_items: int) -> int:
    """Size of a token vocabulary over `n_items` items: the items plus `PAD`."""
    return n_items + 1


def user_sequences(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every user's items in time order, as CSR arrays.

    Returns:
        indptr: int64 (n_users + 1,); the sequence of user u is ``items[indptr[u]:indptr[u+1]]``.
        items: int32 (len(dataset),) item indices (not tokens), each user's oldest first; equal
        timestamps keep their row order.
    """
    users = dataset.users.astype(np.int64)
    counts = np.bincount(users, minlength=dataset.n_users)
    indptr = np.zeros(dataset.n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    if len(users) == 0:
        return indptr, np.zeros(0, dtype=np.int32)
    time = dataset.timestamps.astype(np.int64) - dataset.timestamps.min()
    user_bits = max(1, (dataset.n_users - 1).bit_length())
    time_bits = max(1, int(time.max()).bit_length())
    if user_bits + time_bits <= 62:
        # One stable sort of packed (user, time) keys; fast on data already grouped by user.
        order = np.argsort((users << time_bits) | time, kind="stable")
    else:
        order = np.lexsort((time, users))
    return indptr, dataset.items[order]


def windows(
    dataset: Dataset,
    max_length: int,
    step: int | None = None,
    min_length: int = 2,
    *,
    with_users: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Fixed-length, left-padded token windows cut from every user's time-ordered sequence.

    For a user with ``c`` items, windows end after item ``c, c - step, c - 2 * step, ...`` (while
    positive), each holding the up to `max_length` items before its end; that is
    ``ceil(c / step)`` windows before the `min_length` filter. Windows come grouped by user in
    index order, and within a user the most recent window first (Spotlight's order).

    Args:
        max_length: window width (>= 1).
        step: distance between window ends (>= 1); None means `max_length` (no overlap).
        min_length: drop windows with fewer real (non-`PAD`) items than this (>= 1).
        with_users: also return the user index of each window.

    Returns:
        tokens: int64 (n_windows, max_length), `PAD` on the left; with `with_users`, also
        users: int32 (n_windows,).
    """
    step = max_length if step is None else step
    for label, value in (("max_length", max_length), ("step", step), ("min_length", min_length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    indptr, items = user_sequences(dataset)
    counts = np.diff(indptr)
    per_user = -(-counts // step)  # ceil(c / step)
    owner = np.repeat(np.arange(dataset.n_users, dtype=np.int64), per_user)
    back = np.arange(len(owner)) - (np.cumsum(per_user) - per_user)[owner]  # 0 = most recent window
    end = indptr[owner + 1] - back * step
    length = np.minimum(end - indptr[owner], max_length)
    keep = length >= min_length
    owner, end, length = owner[keep], end[keep], length[keep]
    position = end[:, None] - max_length + np.arange(max_length)[None, :]
    real = np.arange(max_length)[None, :] >= (max_length - length)[:, None]
    tokens = np.where(real, items[np.where(real, position, 0)].astype(np.int64) + 1, PAD)
    return (tokens, owner.astype(np.int32)) if with_users else tokens


def last_window(items_in_order: np.ndarray | Sequence[int], max_length: int) -> np.ndarray:
    """The window for scoring one history: its last `max_length` items as tokens, left-padded.

    `items_in_order` are item indices (not tokens), oldest first. Returns int64 (max_length,).
    """
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    items = np.asarray(items_in_order, dtype=np.int64).reshape(-1)
    if len(items) and items.min() < 0:
        raise ValueError(f"items_in_order must be item indices >= 0 (not tokens or raw ids), got {int(items.min())}")
    tail = items[len(items) - min(len(items), max_length) :]
    window = np.full(max_length, PAD, dtype=np.int64)
    window[max_length - len(tail) :] = tail + 1
    return window


def last_windows(dataset: Dataset, max_length: int) -> np.ndarray:
    """The latest window of every user: int64 (n_users, max_length), row u for user index u.

    Row u equals ``last_window(user u's items in time order, max_length)``; users without
    interactions get a row of `PAD`.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    indptr, items = user_sequences(dataset)
    if len(items) == 0:
        return np.full((dataset.n_users, max_length), PAD, dtype=np.int64)
    length = np.minimum(np.diff(indptr), max_length)
    position = indptr[1:, None] - max_length + np.arange(max_length)[None, :]
    real = np.arange(max_length)[None, :] >= (max_length - length)[:, None]
    return np.where(real, items[np.where(real, position, 0)].astype(np.int64) + 1, PAD)

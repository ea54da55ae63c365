"""Sequences: time order with stable ties, Spotlight-style windows (hand-computed and brute force)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recengine.data.dataset import Dataset, IdMap
from recengine.data.sequences import (
    PAD,
    from_token,
    last_window,
    last_windows,
    n_tokens,
    to_token,
    user_sequences,
    windows,
)


def make_dataset(users, items, timestamps, n_users=None, n_items=None) -> Dataset:
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n_users = n_users if n_users is not None else int(users.max(initial=-1)) + 1
    n_items = n_items if n_items is not None else int(items.max(initial=-1)) + 1
    return Dataset.from_arrays(
        "tiny",
        users,
        items,
        np.ones(len(users)),
        np.asarray(timestamps, dtype=np.int64),
        user_map=IdMap(np.arange(n_users, dtype=np.int64)),
        item_map=IdMap(np.arange(n_items, dtype=np.int64)),
    )


@pytest.fixture
def abcde() -> Dataset:
    """User 0 watched items 0..4 ("a".."e") in that order, stored shuffled; user 1 watched 5, 6; user 2 nothing."""
    return make_dataset(
        users=[0, 1, 0, 0, 1, 0, 0],
        items=[3, 6, 0, 4, 5, 2, 1],
        timestamps=[400, 90, 100, 500, 80, 300, 200],
        n_users=3,
        n_items=7,
    )


def test_token_helpers_shift_by_one_and_reserve_zero_for_padding():
    assert PAD == 0
    assert to_token([0, 5]).tolist() == [1, 6]
    assert from_token([1, 6, PAD]).tolist() == [0, 5, -1]
    assert to_token(np.array([2], dtype=np.int32)).dtype == np.int64
    assert n_tokens(7) == 8


def test_user_sequences_orders_each_user_by_time(abcde):
    indptr, items = user_sequences(abcde)
    assert indptr.tolist() == [0, 5, 7, 7]
    assert items.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert indptr.dtype == np.int64 and items.dtype == np.int32


def test_user_sequences_keeps_row_order_for_equal_timestamps():
    dataset = make_dataset(users=[0, 0, 0, 0], items=[9, 7, 8, 1], timestamps=[5, 5, 1, 5], n_items=10)
    assert user_sequences(dataset)[1].tolist() == [8, 9, 7, 1]


def test_windows_match_the_module_docstring_example(abcde):
    # a..e are items 0..4, tokens 1..5: windows end after e, c and a.
    assert windows(abcde, max_length=3, step=2, min_length=1)[:3].tolist() == [[3, 4, 5], [1, 2, 3], [0, 0, 1]]
    assert windows(abcde, max_length=3, step=2, min_length=2)[:2].tolist() == [[3, 4, 5], [1, 2, 3]]


def test_windows_of_every_user_with_users_and_defaults(abcde):
    tokens, users = windows(abcde, max_length=4, with_users=True)  # step defaults to max_length
    # user 0 (5 items): windows end after items 5 and 1 -> [b c d e] and [0 0 0 a], dropped as too short;
    # user 1 (2 items): one window [0 0 f g]; user 2: none.
    assert tokens.tolist() == [[2, 3, 4, 5], [0, 0, 6, 7]]
    assert users.tolist() == [0, 1]
    assert tokens.dtype == np.int64 and users.dtype == np.int32


def test_windows_with_step_one_cover_every_prefix(abcde):
    tokens = windows(abcde, max_length=2, step=1, min_length=1)
    assert tokens.tolist() == [[4, 5], [3, 4], [2, 3], [1, 2], [0, 1], [6, 7], [0, 6]]


def test_windows_with_a_step_longer_than_the_window_skip_items(abcde):
    assert windows(abcde, max_length=2, step=3, min_length=1).tolist() == [[4, 5], [1, 2], [6, 7]]


@pytest.mark.parametrize("argument", [{"max_length": 0}, {"step": 0}, {"min_length": 0}, {"max_length": 2.5}])
def test_windows_reject_non_positive_sizes(abcde, argument):
    kwargs = {"max_length": 3, "step": 1, "min_length": 1} | argument
    with pytest.raises(ValueError, match="must be a positive integer"):
        windows(abcde, **kwargs)


def spotlight_windows(dataset: Dataset, max_length: int, step: int, min_length: int) -> list[list[int]]:
    """Reference: Spotlight's to_sequence, written as plain loops over users."""
    out = []
    for user in range(dataset.n_users):
        own = [row for row in range(len(dataset)) if dataset.users[row] == user]
        own.sort(key=lambda row: (dataset.timestamps[row], row))
        tokens = [int(dataset.items[row]) + 1 for row in own]
        for end in range(len(tokens), 0, -step):
            window = tokens[max(end - max_length, 0) : end]
            if len(window) >= min_length:
                out.append([PAD] * (max_length - len(window)) + window)
    return out


small_data = st.integers(0, 30).flatmap(
    lambda n_rows: st.tuples(
        st.lists(st.integers(0, 3), min_size=n_rows, max_size=n_rows),
        st.lists(st.integers(0, 5), min_size=n_rows, max_size=n_rows),
        st.lists(st.integers(0, 4), min_size=n_rows, max_size=n_rows),
    )
)


@settings(max_examples=80, deadline=None)
@given(data=small_data, max_length=st.integers(1, 6), step=st.integers(1, 7), min_length=st.integers(1, 4))
def test_windows_equal_the_spotlight_reference(data, max_length, step, min_length):
    dataset = make_dataset(*data, n_users=4, n_items=6)
    expected = spotlight_windows(dataset, max_length, step, min_length)
    got = windows(dataset, max_length, step, min_length)
    assert got.shape == (len(expected), max_length)
    assert got.tolist() == expected
    # The last window of each user is the first of its windows (when long enough).
    indptr, items = user_sequences(dataset)
    latest = last_windows(dataset, max_length)
    for user in range(4):
        assert latest[user].tolist() == last_window(items[indptr[user] : indptr[user + 1]], max_length).tolist()


def test_last_window_left_pads_or_truncates():
    assert last_window([4, 0, 2], 5).tolist() == [0, 0, 5, 1, 3]
    assert last_window([4, 0, 2], 2).tolist() == [1, 3]
    assert last_window([], 3).tolist() == [PAD, PAD, PAD]
    assert last_window(np.array([7], dtype=np.int32), 1).dtype == np.int64


def test_last_window_rejects_tokens_and_bad_lengths():
    with pytest.raises(ValueError, match="item indices >= 0"):
        last_window([-1, 2], 3)
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        last_window([1], 0)


def test_last_windows_give_each_users_latest_items(abcde):
    assert last_windows(abcde, 3).tolist() == [[3, 4, 5], [0, 6, 7], [0, 0, 0]]
    empty = make_dataset([], [], [], n_users=2, n_items=3)
    assert last_windows(empty, 2).tolist() == [[0, 0], [0, 0]]
    assert windows(empty, 2).shape == (0, 2)

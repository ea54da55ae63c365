"""Splits: exact partitions, fractions, determinism, leave-last-out ties, canonical ml-100k folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_release
from recengine.data.dataset import Dataset, IdMap
from recengine.data.splits import (
    FOLD_NAMES,
    SPLIT_NAMES,
    Split,
    available_splits,
    make_split,
    split_by_user,
    split_fold,
    split_leave_last_out,
    split_random,
    split_validation,
)
from recengine.data.synthetic import generate_synthetic


def make_dataset(users, items, timestamps=None, ratings=None, source: Path | None = None, n_users=None, n_items=None) -> Dataset:
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n_users = n_users if n_users is not None else int(users.max(initial=-1)) + 1
    n_items = n_items if n_items is not None else int(items.max(initial=-1)) + 1
    return Dataset.from_arrays(
        "tiny",
        users,
        items,
        np.ones(len(users)) if ratings is None else np.asarray(ratings),
        None if timestamps is None else np.asarray(timestamps),
        user_map=IdMap(np.arange(1, n_users + 1, dtype=np.int64)),
        item_map=IdMap(np.arange(1, n_items + 1, dtype=np.int64)),
        source=source,
    )


def rows(dataset: Dataset) -> list[tuple]:
    """The interactions as a sorted list of (user, item, rating, timestamp) tuples (a multiset)."""
    return sorted(zip(dataset.users.tolist(), dataset.items.tolist(), dataset.ratings.tolist(), dataset.timestamps.tolist()))


def assert_partition(split: Split, dataset: Dataset) -> None:
    """train + test hold exactly the dataset's rows, each once, and share its maps and catalogue."""
    assert sorted(rows(split.train) + rows(split.test)) == rows(dataset)
    for part in (split.train, split.test):
        assert part.user_map is dataset.user_map
        assert part.item_map is dataset.item_map
        assert part.catalogue is dataset.catalogue


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return generate_synthetic(n_users=200, n_items=100, n_interactions=4000, seed=3)


# --- random ---------------------------------------------------------------------------------
def test_random_split_is_an_exact_partition_with_the_requested_size(synthetic):
    split = split_random(synthetic, test_fraction=0.25, seed=1)
    assert split.name == "random"
    assert (split.train.part, split.test.part) == ("train", "test")
    assert len(split.test) == 1000 and len(split.train) == 3000
    assert_partition(split, synthetic)


def test_random_split_uses_python_rounding():
    dataset = make_dataset(np.arange(10) % 3, np.arange(10))
    assert len(split_random(dataset, test_fraction=0.25).test) == 2  # round(2.5) == 2
    assert len(split_random(dataset, test_fraction=0.35).test) == 4  # round(3.5) == 4


def test_random_split_is_deterministic_for_a_seed_and_varies_across_seeds(synthetic):
    first, again, other = (split_random(synthetic, seed=seed) for seed in (5, 5, 6))
    assert rows(first.test) == rows(again.test)
    assert rows(first.test) != rows(other.test)


def test_random_split_keeps_row_order(synthetic):
    split = split_random(synthetic, seed=0)
    # Rows of the synthetic data are sorted by (user, timestamp); subsets keep that order.
    for part in (split.train, split.test):
        key = part.users.astype(np.int64) * 10**10 + part.timestamps
        assert np.all(np.diff(key) > 0)


def test_validation_split_carves_fit_and_valid_out_of_train(synthetic):
    train = split_random(synthetic, seed=0).train
    split = split_validation(train, fraction=0.1, seed=3)
    assert split.name == "validation"
    assert (split.train.part, split.test.part) == ("fit", "valid")
    assert len(split.test) == round(len(train) * 0.1)
    assert_partition(split, train)
    assert rows(split_validation(train, fraction=0.1, seed=3).test) == rows(split.test)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fractions_outside_the_open_unit_interval_are_rejected(synthetic, fraction):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_random(synthetic, test_fraction=fraction)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_by_user(synthetic, test_fraction=fraction)
    with pytest.raises(ValueError, match="fraction must be strictly between 0 and 1"):
        split_validation(synthetic, fraction=fraction)


# --- by user --------------------------------------------------------------------------------
def test_user_split_holds_out_whole_users(synthetic):
    split = split_by_user(synthetic, test_fraction=0.2, seed=4)
    assert split.name == "user"
    train_users, test_users = set(split.train.users.tolist()), set(split.test.users.tolist())
    assert not train_users & test_users
    assert len(test_users) == 40  # round(200 * 0.2); every synthetic user has ratings
    assert train_users | test_users == set(range(200))
    assert_partition(split, synthetic)
    assert rows(split_by_user(synthetic, seed=4).test) == rows(split.test)
    assert rows(split_by_user(synthetic, seed=5).test) != rows(split.test)


def test_user_split_draws_only_among_users_with_interactions():
    # Users 1 and 3 have nothing in this part of the data: half of the 2 present users is 1.
    dataset = make_dataset([0, 0, 2, 2, 2], [0, 1, 0, 1, 2], n_users=4)
    split = split_by_user(dataset, test_fraction=0.5, seed=0)
    assert len(set(split.test.users.tolist())) == 1
    assert set(split.test.users.tolist()) <= {0, 2}
    assert_partition(split, dataset)


# --- leave last out -------------------------------------------------------------------------
def test_leave_last_out_takes_the_latest_with_ties_broken_by_row_order():
    # Rows are interleaved across users on purpose. Hand-worked answer:
    #   user 0: rows 0 (t=10), 2 (t=30), 4 (t=30), 6 (t=20) -> latest is row 4 (tie at 30, later row)
    #   user 1: row 1 only                                  -> stays in train
    #   user 2: rows 3 (t=5), 5 (t=1)                       -> latest is row 3
    users = [0, 1, 0, 2, 0, 2, 0]
    items = [0, 0, 1, 0, 2, 1, 3]
    stamps = [10, 99, 30, 5, 30, 1, 20]
    dataset = make_dataset(users, items, stamps, ratings=np.arange(7) + 0.5)
    split = split_leave_last_out(dataset)
    assert split.name == "last"
    assert split.test.ratings.tolist() == [3.5, 4.5]  # rows 3 and 4, in row order
    assert split.train.ratings.tolist() == [0.5, 1.5, 2.5, 5.5, 6.5]

    two = split_leave_last_out(dataset, n=2)
    # user 0: rows 4 and 2 (both t=30); user 2 keeps one row in train, so only row 3 leaves.
    assert two.test.ratings.tolist() == [2.5, 3.5, 4.5]

    three = split_leave_last_out(dataset, n=3)
    # user 0: rows 4, 2, then 6 (t=20); row 0 (t=10) stays.
    assert three.test.ratings.tolist() == [2.5, 3.5, 4.5, 6.5]
    for split_n in (split, two, three):
        assert_partition(split_n, dataset)


def test_leave_last_out_handles_many_equal_timestamps():
    # One user, five rows all at the same second: the last rows in row order are the latest.
    dataset = make_dataset([0] * 5, [4, 3, 2, 1, 0], [7] * 5)
    assert split_leave_last_out(dataset, n=2).test.items.tolist() == [1, 0]


def test_leave_last_out_on_synthetic_picks_each_users_latest(synthetic):
    split = split_leave_last_out(synthetic)
    assert len(split.test) == synthetic.n_users  # every synthetic user has >= 2 ratings here
    latest = np.full(synthetic.n_users, -1, dtype=np.int64)
    np.maximum.at(latest, synthetic.users, synthetic.timestamps)
    assert np.array_equal(split.test.timestamps, latest[split.test.users])


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_leave_last_out_rejects_bad_n(synthetic, n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        split_leave_last_out(synthetic, n=n)


def brute_force_last(dataset: Dataset, n: int) -> np.ndarray:
    """Reference: per user, sort its rows by (timestamp, row) and hold out the last min(n, count-1)."""
    test = np.zeros(len(dataset), dtype=bool)
    for user in set(dataset.users.tolist()):
        own = [row for row in range(len(dataset)) if dataset.users[row] == user]
        own.sort(key=lambda row: (dataset.timestamps[row], row))
        if len(own) >= 2:
            for row in own[len(own) - min(n, len(own) - 1) :]:
                test[row] = True
    return test


small_data = st.integers(0, 40).flatmap(
    lambda n_rows: st.tuples(
        st.lists(st.integers(0, 4), min_size=n_rows, max_size=n_rows),
        st.lists(st.integers(0, 6), min_size=n_rows, max_size=n_rows),
        st.lists(st.integers(0, 3), min_size=n_rows, max_size=n_rows),  # few distinct times: many ties
    )
)


@settings(max_examples=60, deadline=None)
@given(data=small_data, n=st.integers(1, 4), seed=st.integers(0, 2**31), fraction=st.floats(0.05, 0.95))
def test_every_split_partitions_any_small_dataset(data, n, seed, fraction):
    users, items, stamps = data
    dataset = make_dataset(users, items, stamps, ratings=np.arange(len(users), dtype=float), n_users=5, n_items=7)
    for split in (
        split_random(dataset, fraction, seed),
        split_by_user(dataset, fraction, seed),
        split_leave_last_out(dataset, n),
        split_validation(dataset, fraction, seed),
    ):
        assert_partition(split, dataset)
    assert len(split_random(dataset, fraction, seed).test) == round(len(users) * fraction)
    by_user = split_by_user(dataset, fraction, seed)
    assert not set(by_user.train.users.tolist()) & set(by_user.test.users.tolist())
    # Ratings are row numbers, so they identify the rows sent to test.
    expected = np.flatnonzero(brute_force_last(dataset, n)).astype(np.float32)
    assert np.array_equal(split_leave_last_out(dataset, n).test.ratings, expected)


# --- make_split, available_splits, folds ------------------------------------------------------
def test_make_split_dispatches_by_name(synthetic):
    assert rows(make_split(synthetic, "random", seed=9).test) == rows(split_random(synthetic, seed=9).test)
    assert rows(make_split(synthetic, "user", seed=9).test) == rows(split_by_user(synthetic, seed=9).test)
    assert rows(make_split(synthetic, "last").test) == rows(split_leave_last_out(synthetic).test)
    assert {make_split(synthetic, name).name for name in ("random", "user", "last")} == {"random", "user", "last"}


def test_make_split_rejects_unknown_names_listing_the_allowed_ones(synthetic):
    with pytest.raises(ValueError, match=r"split must be one of \('random', 'user', 'last', 'u1'"):
        make_split(synthetic, "u6")


def test_folds_need_the_ml100k_files(synthetic):
    assert SPLIT_NAMES == ("random", "user", "last", "u1", "u2", "u3", "u4", "u5", "ua", "ub")
    assert available_splits(synthetic) == ["random", "user", "last"]
    with pytest.raises(ValueError, match="split 'u1' exists only for ml-100k .*use 'random', 'user' or 'last'"):
        make_split(synthetic, "u1")
    with pytest.raises(ValueError, match="fold must be one of"):
        split_fold(synthetic, "random")


def write_fold(folder: Path, fold: str, base: list[tuple], test: list[tuple]) -> None:
    for suffix, lines in (("base", base), ("test", test)):
        text = "".join("\t".join(str(v) for v in line) + "\n" for line in lines)
        (folder / f"{fold}.{suffix}").write_text(text)


def test_fold_files_are_mapped_through_the_id_maps(tmp_path):
    # Raw ids are index + 1; rows: (u1,i1) (u1,i2) (u2,i1) (u2,i3).
    dataset = make_dataset([0, 0, 1, 1], [0, 1, 0, 2], [1, 2, 3, 4], ratings=[1, 2, 3, 4], source=tmp_path)
    write_fold(tmp_path, "ua", base=[(1, 1, 1, 1), (2, 3, 4, 4)], test=[(2, 1, 3, 3), (1, 2, 2, 2)])
    assert available_splits(dataset) == ["random", "user", "last", "ua"]
    split = split_fold(dataset, "ua")
    assert split.name == "ua"
    assert split.train.ratings.tolist() == [1.0, 4.0]
    assert split.test.ratings.tolist() == [2.0, 3.0]  # dataset row order, not file order
    assert_partition(split, dataset)
    assert rows(make_split(dataset, "ua").test) == rows(split.test)


def test_fold_files_that_do_not_match_the_dataset_are_rejected(tmp_path):
    dataset = make_dataset([0, 0, 1], [0, 1, 0], source=tmp_path)
    write_fold(tmp_path, "u2", base=[(1, 1, 5, 0)], test=[(9, 1, 5, 0)])  # user 9 is unknown
    with pytest.raises(ValueError, match="user 9 / item 1, unknown"):
        split_fold(dataset, "u2")
    write_fold(tmp_path, "u3", base=[(1, 1, 5, 0)], test=[(1, 2, 5, 0)])  # row (u2, i1) in neither
    with pytest.raises(ValueError, match="do not partition the 3 rows"):
        split_fold(dataset, "u3")
    with pytest.raises(ValueError, match="exists only for ml-100k"):
        split_fold(dataset, "u4")  # no files at all


def test_canonical_ml100k_folds_on_real_data():
    from recengine.data.movielens import load_movielens

    folder = require_release("ml-100k")
    dataset = load_movielens(folder, "ml-100k")
    assert available_splits(dataset) == list(SPLIT_NAMES)
    u1 = make_split(dataset, "u1")
    assert (len(u1.train), len(u1.test)) == (80000, 20000)
    assert_partition(u1, dataset)
    # The test part holds exactly the (user, item) pairs listed in u1.test, by raw id.
    listed = np.loadtxt(folder / "u1.test", dtype=np.int64)[:, :2]
    held = np.stack([dataset.user_map.ids[u1.test.users], dataset.item_map.ids[u1.test.items]], axis=1)
    assert sorted(map(tuple, held.tolist())) == sorted(map(tuple, listed.tolist()))
    # The u1..u5 test parts are disjoint and cover the data; ua holds out 10 ratings per user.
    held_out = [make_split(dataset, fold).test for fold in FOLD_NAMES[:5]]
    keys = np.concatenate([part.users.astype(np.int64) * dataset.n_items + part.items for part in held_out])
    assert len(keys) == 100000 and len(set(keys.tolist())) == 100000
    ua = split_fold(dataset, "ua")
    assert np.array_equal(np.bincount(ua.test.users, minlength=dataset.n_users), np.full(943, 10))

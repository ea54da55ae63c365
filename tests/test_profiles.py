"""Saved profiles: the SQLite store, its migrations, concurrency, exports/imports and shareable links."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recengine.data.dataset import Dataset, IdMap
from recengine.profiles import (
    MAX_IMPORT_RATINGS,
    MAX_LINK_RATINGS,
    MIGRATIONS,
    PROFILES_DB_ENV,
    SCHEMA_VERSION,
    ProfileData,
    ProfileError,
    ProfileExistsError,
    ProfileNotFoundError,
    ProfileStore,
    ProfileStoreError,
    Rating,
    default_profiles_path,
    item_id_of,
    parse_profile_csv,
    parse_profile_json,
    parse_profile_link,
    profile_link,
    profile_to_csv,
    read_profile_file,
    validate_profile_name,
    write_profile_file,
)


@pytest.fixture
def store(tmp_path) -> ProfileStore:
    return ProfileStore(tmp_path / "profiles.sqlite3")


@pytest.fixture
def tiny() -> Dataset:
    """2 users x 4 items with raw item ids 1, 7, 12, 50 on a 1-5 scale."""
    return Dataset.from_arrays(
        "tiny", np.array([0, 1]), np.array([0, 3]), np.array([4.0, 5.0]),
        user_map=IdMap(np.array([1, 2])), item_map=IdMap(np.array([1, 7, 12, 50])), rating_scale=(1.0, 5.0),
    )  # fmt: skip


def ids_and_ratings(data: ProfileData) -> list[tuple]:
    return [(r.item_id, r.rating) for r in data.ratings]


# --- names -----------------------------------------------------------------------------------------
def test_names_are_trimmed_and_may_hold_any_printable_text():
    assert validate_profile_name("  Alice  ") == "Alice"
    assert validate_profile_name("🎬 Zoë's picks") == "🎬 Zoë's picks"
    assert validate_profile_name("x" * 80) == "x" * 80
    assert validate_profile_name("Robert'); DROP TABLE profiles;--") == "Robert'); DROP TABLE profiles;--"


@pytest.mark.parametrize("name", ["", "   ", "x" * 81, "a\x00b", "line\nbreak", "tab\there", "a\u2028b", "\x7f", None, 5, b"bytes"])
def test_bad_names_are_refused(name):
    with pytest.raises(ProfileError):
        validate_profile_name(name)


def test_default_path_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(PROFILES_DB_ENV, str(tmp_path / "p.db"))
    assert default_profiles_path() == tmp_path / "p.db"
    monkeypatch.delenv(PROFILES_DB_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_profiles_path() == tmp_path / "xdg" / "recengine" / "profiles.sqlite3"
    assert ProfileStore().path == tmp_path / "xdg" / "recengine" / "profiles.sqlite3"


# --- profiles --------------------------------------------------------------------------------------
def test_create_find_rename_delete(store):
    alice = store.create("  Alice ", "ml-100k")
    assert (alice.name, alice.dataset, alice.n_ratings, alice.n_skipped) == ("Alice", "ml-100k", 0, 0)
    assert store.find("ALICE", "ml-100k") == alice and store.get(alice.id) == alice
    other = store.create("alice", "ml-latest-small")  # unique per dataset only
    with pytest.raises(ProfileExistsError, match="'Alice' already exists on ml-100k"):
        store.create("aLiCe", "ml-100k")
    bob = store.create("Robert'); DROP TABLE profiles;--", "ml-100k")
    assert store.get(bob).name == "Robert'); DROP TABLE profiles;--"
    with pytest.raises(ProfileExistsError):
        store.rename(bob, "alice")
    assert store.rename(bob, "Bob").name == "Bob"
    assert {p.name for p in store.list_profiles("ml-100k")} == {"Alice", "Bob"}
    assert len(store.list_profiles()) == 3
    store.delete(alice)
    with pytest.raises(ProfileNotFoundError):
        store.get(alice.id)
    with pytest.raises(ProfileNotFoundError):
        store.delete(alice)
    with pytest.raises(ProfileNotFoundError):
        store.find("Alice", "ml-100k")
    with pytest.raises(ProfileNotFoundError):
        store.rate(alice, 1, 4)
    assert store.get(other).name == "alice"


def test_ratings_come_back_in_the_order_rated(store):
    p = store.create("p", "ml-100k")
    for item, rating, at in [(1, 5, 10.0), (50, 4.5, 20.0), (7, 3, 30.0)]:
        store.rate(p, item, rating, at)
    store.rate(p, 1, 2, 40.0)  # a changed rating keeps its place
    assert ids_and_ratings(store.load(p)) == [(1, 2.0), (50, 4.5), (7, 3.0)]
    assert store.load(p).ratings[0] == Rating(1, 2.0, 40.0)
    assert store.unrate(p, 50) is True and store.unrate(p, 50) is False
    store.rate(p, 50, 1)  # rated again: to the end
    assert [r.item_id for r in store.ratings(p)] == [1, 7, 50]


def test_skip_and_rate_exclude_each_other(store):
    p = store.create("p", "ml-100k")
    store.rate(p, 1, 4)
    store.skip(p, 1)
    store.skip(p, 2)
    data = store.load(p)
    assert data.ratings == () and data.skipped == (1, 2)
    store.rate(p, 2, 3)
    assert store.load(p).skipped == (1,) and store.unskip(p, 1) is True and store.unskip(p, 1) is False
    info = store.get(p)
    assert (info.n_ratings, info.n_skipped) == (1, 0)
    store.clear(p)
    assert store.load(p).ratings == () and store.get(p).n_ratings == 0


def test_item_ids_keep_their_type(store, tiny):
    p = store.create("p", "uploaded")
    store.rate(p, np.int64(12), 4)
    store.rate(p, "12", 3)
    store.rate(p, item_id_of(tiny, 3), 5)
    assert ids_and_ratings(store.load(p)) == [(12, 4.0), ("12", 3.0), (50, 5.0)]
    assert type(store.load(p).ratings[0].item_id) is int


@pytest.mark.parametrize("rating", [math.nan, math.inf, -math.inf, 0.3, 5.5, 0.0, -1, True, "4", None, 1e308])
def test_invalid_ratings_are_refused(store, rating):
    p = store.create("p", "ml-100k")
    with pytest.raises(ProfileError, match="from 0.5 to 5 in steps of 0.5"):
        store.rate(p, 1, rating)
    assert store.load(p).ratings == ()


@pytest.mark.parametrize("item", [None, 1.5, True, "", "   ", "x" * 201, "a\nb", 2**70, [1]])
def test_invalid_item_ids_are_refused(store, item):
    p = store.create("p", "ml-100k")
    with pytest.raises(ProfileError):
        store.rate(p, item, 4)


def test_the_scale_is_the_datasets(store):
    p = store.create("p", "ml-100k")
    with pytest.raises(ProfileError, match="from 1 to 5"):
        store.rate(p, 1, 0.5, scale=(1.0, 5.0))
    store.rate(p, 1, 1, scale=(1.0, 5.0))


def test_every_write_is_on_disk_at_once(tmp_path):
    first = ProfileStore(tmp_path / "p.sqlite3")
    p = first.create("p", "ml-100k")
    first.rate(p, 1, 4)
    # another process (a new store) sees it without anything being closed or flushed
    assert ids_and_ratings(ProfileStore(tmp_path / "p.sqlite3").load(p.id)) == [(1, 4.0)]
    with sqlite3.connect(tmp_path / "p.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_profile_data_maps_to_item_indices(tiny):
    data = ProfileData("p", "tiny", (Rating(50, 4.0, 0), Rating(999, 3.0, 0), Rating(1, 2.0, 0)))
    assert data.item_ratings(tiny) == ({3: 4.0, 0: 2.0}, [999])
    assert ProfileData("p", "tiny", (), skipped=(7, "7", 404)).skipped_items(tiny) == {1}
    assert data.ratings_by_id() == {50: 4.0, 999: 3.0, 1: 2.0}


# --- schema versions -------------------------------------------------------------------------------
def make_v1_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.executemany("INSERT INTO profiles (id, name, dataset, created_at) VALUES (?, ?, ?, ?)",
                     [(1, "Bob", "ml-100k", 100.0), (2, "bob", "ml-100k", 200.0), (3, "bob", "ml-1m", 300.0)])  # fmt: skip
    conn.executemany(
        "INSERT INTO ratings (profile_id, item_id, rating, rated_at) VALUES (?, ?, ?, ?)",
        [(1, 50, 4.0, 30.0), (1, 1, 5.0, 10.0), (1, "x", 3.0, 20.0), (2, 7, 1.0, 5.0)],
    )
    conn.commit()
    conn.close()


def test_a_v1_file_is_migrated_keeping_everything(tmp_path):
    path = tmp_path / "old.sqlite3"
    make_v1_file(path)
    store = ProfileStore(path)
    assert store.schema_version() == SCHEMA_VERSION == 2
    # v1 kept no order: ratings are ordered by time
    assert ids_and_ratings(store.load(1)) == [(1, 5.0), ("x", 3.0), (50, 4.0)]
    # names that clash ignoring case get a suffix; other datasets are untouched
    assert [(p.id, p.name, p.dataset) for p in sorted(store.list_profiles(), key=lambda p: p.id)] == [
        (1, "Bob", "ml-100k"), (2, "bob (2)", "ml-100k"), (3, "bob", "ml-1m"),
    ]  # fmt: skip
    assert store.get(1).updated_at == 100.0
    store.rate(1, 7, 2)  # the new tables work: order continues, skip works
    store.skip(2, 7)
    assert [r.item_id for r in store.ratings(1)][-1] == 7 and store.load(2).skipped == (7,)
    assert ProfileStore(path).schema_version() == 2  # opening again changes nothing


def test_a_file_from_a_newer_version_is_refused_untouched(tmp_path):
    path = tmp_path / "new.sqlite3"
    ProfileStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(ProfileStoreError, match="schema version 99, newer than"):
        ProfileStore(path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ProfileStoreError, match="not a usable profiles database"):
        ProfileStore(path)


# --- concurrency -----------------------------------------------------------------------------------
def test_threads_lose_no_writes(store):
    shared = store.create("shared", "ml-100k")
    own = [store.create(f"t{i}", "ml-100k") for i in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def work(index: int) -> None:
        try:
            start.wait()
            for n in range(40):
                store.rate(shared, index * 1000 + n, 0.5 + (n % 10) / 2)
                store.rate(own[index], n, 3)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ratings = store.load(shared).ratings_by_id()
    assert len(ratings) == 240 and ratings[5 * 1000 + 13] == 2.0
    assert [store.get(p).n_ratings for p in own] == [40] * 6


def _write_from_process(path: str, index: int, n: int, go, results) -> None:
    try:
        store = ProfileStore(path, busy_timeout=0.05)  # short waits: the retry loop does the work
        go.wait(30)
        shared = store.find("shared", "ml-100k")
        mine = store.create(f"process {index}", "ml-100k")
        for k in range(n):
            store.rate(shared, index * 10_000 + k, 4.5)
            store.rate(mine, k, 1 + k % 5)
        results.put((index, "ok"))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        results.put((index, f"{type(error).__name__}: {error}"))


def test_processes_lose_no_writes_and_never_see_locks(tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    ProfileStore(path).create("shared", "ml-100k")
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    workers = [context.Process(target=_write_from_process, args=(path, i, 60, go, results)) for i in range(4)]
    for worker in workers:
        worker.start()
    go.set()
    outcomes = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(30)
    assert outcomes == {i: "ok" for i in range(4)}
    store = ProfileStore(path)
    assert store.find("shared", "ml-100k").n_ratings == 240
    for i in range(4):
        data = store.load(store.find(f"process {i}", "ml-100k"))
        assert ids_and_ratings(data) == [(k, float(1 + k % 5)) for k in range(60)]


def test_new_file_opened_by_many_processes_at_once(tmp_path):
    path = str(tmp_path / "fresh.sqlite3")
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()

    def open_and_write(index: int) -> None:
        try:
            go.wait(30)
            store = ProfileStore(path, busy_timeout=0.05)
            store.rate(store.create(f"p{index}", "d"), 1, 3)
            results.put((index, "ok"))
        except BaseException as error:  # noqa: BLE001
            results.put((index, repr(error)))

    workers = [context.Process(target=open_and_write, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    go.set()
    outcomes = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(30)
    assert outcomes == {i: "ok" for i in range(4)}
    assert ProfileStore(path).schema_version() == SCHEMA_VERSION and len(ProfileStore(path).list_profiles()) == 4


def test_a_held_lock_is_waited_out_then_reported(tmp_path):
    path = tmp_path / "locked.sqlite3"
    store = ProfileStore(path, busy_timeout=0.02, retry_seconds=10)
    p = store.create("p", "d")
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    releaser.start()
    store.rate(p, 1, 4)  # retried with backoff until the lock goes: no error surfaces
    releaser.join()
    assert ids_and_ratings(store.load(p)) == [(1, 4.0)]
    impatient = ProfileStore(path, busy_timeout=0.02, retry_seconds=0.2)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ProfileStoreError, match="stayed locked"):
            impatient.rate(p, 2, 4)
    finally:
        blocker.execute("COMMIT")
        blocker.close()


# --- export and import -----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["json", "csv"])
def test_export_import_round_trip(store, tmp_path, suffix):
    p = store.create("Zoë 🎬", "ml-100k")
    for item, rating in [(50, 4.5), (1, 5), ("a,b:c\"d", 1), (7, 0.5)]:
        store.rate(p, item, rating, at=1_700_000_000.25)
    store.skip(p, 99)
    path = store.export(p, tmp_path / f"zoe.{suffix}")
    data = read_profile_file(path, name="copy", dataset_name="ml-100k")
    original = store.load(p)
    assert data.ratings == original.ratings and data.name == "copy"
    assert data.skipped == ((99,) if suffix == "json" else ())
    info = store.import_profile(data)
    assert store.load(info).ratings == original.ratings
    with pytest.raises(ProfileExistsError):
        store.import_profile(data)
    store.import_profile(ProfileData("copy", "ml-100k", (Rating(3, 2.0, 1.0),)), replace=True)
    assert ids_and_ratings(store.load(info)) == [(3, 2.0)]


def test_exports_are_atomic(store, tmp_path, monkeypatch):
    p = store.create("p", "ml-100k")
    store.rate(p, 1, 4)
    path = store.export(p, tmp_path / "p.json")
    before = path.read_text()
    store.rate(p, 2, 5)

    def crash(*args, **kwargs):
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.export(p, path)
    assert path.read_text() == before and [f.name for f in tmp_path.iterdir() if f.name.startswith(".p.json")] == []


def test_titles_are_added_when_the_dataset_is_known(tiny, tmp_path):
    data = ProfileData("p", "tiny", (Rating(50, 4.0, 0.0),))
    path = write_profile_file(data, tmp_path / "p.json", dataset=tiny)
    assert json.loads(path.read_text())["ratings"] == [{"item_id": 50, "rating": 4.0, "rated_at": 0.0, "title": "Item 50"}]
    assert profile_to_csv(data, {50: "Heat, the film"}) == 'item_id,rating,rated_at,title\n50,4,0.0,"Heat, the film"\n'


def profile_json(ratings, **fields) -> str:
    payload = {"format": "recengine-profile", "version": 1, "name": "p", "dataset": "tiny", "ratings": ratings, **fields}
    return json.dumps(payload)


def test_duplicates_keep_the_last_occurrence():
    text = profile_json([{"item_id": 1, "rating": 2}, {"item_id": 50, "rating": 3}, {"item_id": 1, "rating": 4}])
    data = parse_profile_json(text)
    assert ids_and_ratings(data) == [(50, 3.0), (1, 4.0)] and data.duplicates_dropped == 1


def test_import_checks_items_and_scale_against_the_dataset(tiny):
    good = parse_profile_json(profile_json([{"item_id": "12", "rating": 4}], skipped=[7, 12]), dataset=tiny)
    assert ids_and_ratings(good) == [(12, 4.0)] and good.skipped == (7,)  # "12" conformed; rated beats skipped
    text = profile_json([{"item_id": i, "rating": 3} for i in (1, 404, 405, 50)])
    with pytest.raises(ProfileError, match=r"2 item id\(s\) are not in tiny: 404, 405"):
        parse_profile_json(text, dataset=tiny)
    with pytest.raises(ProfileError, match="from 1 to 5"):
        parse_profile_json(profile_json([{"item_id": 1, "rating": 0.5}]), dataset=tiny)
    with pytest.raises(ProfileError, match="a profile of 'ml-100k', not of 'tiny'"):
        parse_profile_json(profile_json([], dataset="ml-100k"), dataset=tiny)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{", "not valid JSON"),
        ("[]", "must hold a JSON object"),
        ('{"format": "other"}', "not a recengine profile"),
        (profile_json([], version=2), "version 2"),
        (profile_json([], version=True), "version True"),
        (profile_json([], name=""), "profile name is empty"),
        (profile_json([], name="a\u0000b"), "control character"),
        (profile_json([], dataset=None), "dataset name must be text"),
        (profile_json({"1": 4}), "must be lists"),
        (profile_json([[1, 4]]), "ratings[0] must be an object"),
        (profile_json([{"item_id": 1, "rating": 4, "extra": 1}]), "unexpected field(s) ['extra']"),
        (profile_json([{"item_id": 1.5, "rating": 4}]), "ratings[0].item_id must be an integer or text"),
        (profile_json([{"item_id": None, "rating": 4}]), "item_id must be an integer or text"),
        (profile_json([{"item_id": 1, "rating": 7}]), "ratings[0].rating must be a number from 0.5 to 5"),
        (profile_json([{"item_id": 1, "rating": 3.3}]), "in steps of 0.5"),
        (profile_json([{"item_id": 1, "rating": True}]), "got True"),
        (profile_json([{"item_id": 1, "rating": "4"}]), "got '4'"),
        (profile_json([{"item_id": 1}]), "got None"),
        (profile_json([{"item_id": 1, "rating": 4, "rated_at": -5}]), "rated_at must be seconds"),
        ('{"format": "recengine-profile", "version": 1, "name": "p", "dataset": "d", "ratings": [{"item_id": 1, "rating": NaN}]}',
         "NaN is not a valid number"),
        ('{"format": "recengine-profile", "version": 1, "name": "p", "dataset": "d", "ratings": [{"item_id": 1, "rating": Infinity}]}',
         "Infinity is not a valid number"),
        (profile_json([], skipped=[None]), "skipped[0] must be an integer or text"),
        (" " * 2_000_001, "over the 2,000,000 limit"),
        ("[" * 50_000 + "]" * 50_000, "not valid JSON"),
    ],
)
def test_json_import_refuses_with_a_clear_message(text, fragment):
    with pytest.raises(ProfileError) as caught:
        parse_profile_json(text)
    assert fragment in str(caught.value)


def test_json_import_size_limits():
    too_many = profile_json([{"item_id": i, "rating": 3} for i in range(MAX_IMPORT_RATINGS + 1)])
    with pytest.raises(ProfileError, match="more than 20,000"):
        parse_profile_json(too_many)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "is empty"),
        ("movie,stars\n1,4\n", "must be a header naming item_id and rating"),
        ("item_id,rating\n1,4\n2,x\n", "row 3, column 'rating' must be a number"),
        ("item_id,rating\n1,4\n2,9\n", "row 3, column 'rating' must be a number from 0.5 to 5"),
        ("item_id,rating\n1,4,7\n", "row 2 has 3 fields where the header has 2"),
        ("item_id,rating,rated_at\n1,4,yesterday\n", "row 2, column 'rated_at' must be a number"),
        ("item_id,rating\n,4\n", "row 2, column 'item_id' must be 1-200 printable characters"),
        ("item_id,rating\n1,nan\n", "got nan"),
    ],
)
def test_csv_import_names_the_row(text, fragment):
    with pytest.raises(ProfileError) as caught:
        parse_profile_csv(text, name="p", dataset_name="d")
    assert fragment in str(caught.value)


def test_csv_import_reads_ids_by_type(tiny):
    data = parse_profile_csv("\ufeffitem_id,rating\n12,4\nabc,3\n007,2\n", name="p", dataset_name="d")
    assert ids_and_ratings(data) == [(12, 4.0), ("abc", 3.0), ("007", 2.0)]


def test_reading_profile_files_refuses_bad_files(tmp_path):
    (tmp_path / "p.txt").write_text("{}")
    with pytest.raises(ProfileError, match="format must be 'json' or 'csv'"):
        read_profile_file(tmp_path / "p.txt")
    (tmp_path / "latin.json").write_bytes('{"name": "Zoé"}'.encode("latin-1"))
    with pytest.raises(ProfileError, match="not UTF-8 text"):
        read_profile_file(tmp_path / "latin.json")
    with pytest.raises(ProfileError, match="cannot read"):
        read_profile_file(tmp_path / "absent.json")
    (tmp_path / "p.csv").write_text("item_id,rating\n1,4\n")
    with pytest.raises(ProfileError, match="needs a profile name and a dataset"):
        read_profile_file(tmp_path / "p.csv")


# --- shareable links -------------------------------------------------------------------------------
def test_links_are_compact_and_round_trip():
    data = ProfileData("Zoë", "ml-100k", (Rating(1, 5.0, 0.0), Rating(50, 4.5, 0.0)))
    assert profile_link(data) == "dataset=ml-100k&r=1:5,50:4.5&name=Zo%C3%AB"
    assert profile_link({1: 5, 50: 4.5}, "ml-100k") == "dataset=ml-100k&r=1:5,50:4.5"
    url = profile_link(data, base_url="https://movies.example/onboarding")
    assert url.startswith("https://movies.example/onboarding?dataset=ml-100k&r=")
    for form in (url, "?" + profile_link(data), profile_link(data), {"dataset": "ml-100k", "r": "1:5,50:4.5", "name": "Zoë"}):
        decoded = parse_profile_link(form)
        assert (decoded.name, decoded.dataset, ids_and_ratings(decoded)) == ("Zoë", "ml-100k", [(1, 5.0), (50, 4.5)])


def test_text_ids_with_separators_survive_a_link():
    awkward = ["a:b", "c,d", "100%", "x&y=z", "é 🎬", "+1", "007"]
    link = profile_link({item: 3 for item in awkward}, "uploaded")
    assert [r.item_id for r in parse_profile_link(link).ratings] == awkward


def test_link_limits_and_dataset_checks(tiny):
    with pytest.raises(ProfileError, match="at most 200 ratings"):
        profile_link({i: 3 for i in range(MAX_LINK_RATINGS + 1)}, "d")
    assert len(parse_profile_link(profile_link({i: 3 for i in range(MAX_LINK_RATINGS)}, "d")).ratings) == 200
    with pytest.raises(ProfileError, match="not in tiny: 404"):
        parse_profile_link("dataset=tiny&r=1:4,404:3", dataset=tiny)
    with pytest.raises(ProfileError, match="from 1 to 5"):
        parse_profile_link("dataset=tiny&r=1:0.5", dataset=tiny)
    assert parse_profile_link("dataset=tiny&r=1:4,1:2", dataset=tiny).ratings_by_id() == {1: 2.0}


@pytest.mark.parametrize(
    "query",
    ["", "?", "dataset=ml-100k", "r=1:5", "dataset=&r=1:5", "dataset=d&r=", "dataset=d&r=1", "dataset=d&r=1:", "dataset=d&r=:5",
     "dataset=d&r=1:nan", "dataset=d&r=1:inf", "dataset=d&r=1:4.7", "dataset=d&r=1:9", "dataset=d&r=1:-1", "dataset=d&r=1:5e0",
     "dataset=d&dataset=e&r=1:5", "dataset=d&r=1:5&name=%00", "dataset=d&r=%ff:5", "dataset=d&r=" + ",".join(["1:5"] * 201),
     "dataset=d&r=1:5&" + "&".join(f"x{i}=1" for i in range(30)), "x" * 10_000, "dataset=d%0Ae&r=1:5",
     "dataset=../../etc/passwd&r=1:5&name=" + "a" * 100],
)  # fmt: skip
def test_bad_links_are_value_errors(query):
    with pytest.raises(ProfileError):
        parse_profile_link(query)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.builds(lambda r: f"dataset=d&r={r}", st.text(alphabet="0123456789:,.%abAB-+ ", max_size=60))))
def test_link_decoding_never_raises_anything_but_value_error(text):
    try:
        data = parse_profile_link(text)
    except ValueError:
        return
    assert 1 <= len(data.ratings) <= MAX_LINK_RATINGS
    assert all(0.5 <= r.rating <= 5 and r.rating * 2 == int(r.rating * 2) for r in data.ratings)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
rating_entries = st.lists(
    st.fixed_dictionaries({"item_id": json_values, "rating": json_values}, optional={"rated_at": json_values, "title": json_values}),
    max_size=5,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    json_values.map(lambda v: json.dumps(v)),
    st.builds(profile_json, rating_entries),
    st.builds(lambda name, dataset: profile_json([], name=name, dataset=dataset), json_values, json_values),
    st.text(max_size=200),
))  # fmt: skip
def test_importing_arbitrary_json_never_raises_anything_but_value_error(text):
    try:
        data = parse_profile_json(text)
    except ValueError:
        return
    assert len({r.item_id for r in data.ratings}) == len(data.ratings)
    assert all(isinstance(r.item_id, (int, str)) and math.isfinite(r.rating) for r in data.ratings)

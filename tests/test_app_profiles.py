"""Saved profiles and uploads in the app ("Your profiles", "Your data", the sidebar, shared links),
with `streamlit.testing.v1.AppTest` on the synthetic dataset.

Every test has its own profiles database and uploads folder (tests/conftest.py points
XDG_DATA_HOME at a temporary folder); what the app wrote is checked by opening the SQLite file
with a fresh `ProfileStore`, as another process would.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from test_app import app, assert_clean, batch_keys, profile_of, rate, shared_store, use_store  # noqa: F401 - fixtures
from test_hostile_cli import HOSTILE_TEXT

from recengine.data import upload
from recengine.data.movielens import load_dataset
from recengine.profiles import (
    ProfileData,
    ProfileError,
    ProfileStore,
    Rating,
    default_profiles_path,
    profile_link,
    profile_to_json,
    validate_profile_name,
)
from ui import saved, state

PROFILES = "app_pages/profiles.py"
UPLOAD = "app_pages/upload.py"
CONTROL = {"\x00", "\x1b", "\r"}


# --- helpers ------------------------------------------------------------------------------------------
def database() -> ProfileStore:
    """The app's profiles database, opened as another process would."""
    return ProfileStore(default_profiles_path())


def ids_of(items) -> list:
    ids = load_dataset("synthetic").item_map.ids
    return [ids[int(i)].item() for i in items]


def batch_items(at: AppTest) -> list[int]:
    return [int(key.rsplit("-", 1)[1]) for key in batch_keys(at)]


def messages(at: AppTest) -> list[str]:
    return [element.value for element in [*at.error, *at.warning, *at.success, *at.info]]


def sidebar_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.sidebar.caption]


def open_profiles(at: AppTest) -> AppTest:
    at.switch_page(PROFILES).run()
    assert_clean(at)
    assert at.title[0].value == "Your profiles"
    return at


def save_as(at: AppTest, name: str) -> AppTest:
    at.text_input(key="profile-new-name").input(name)
    next(b for b in at.button if b.label in ("Save", "Save a copy")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def import_file(at: AppTest, filename: str, content: bytes, name: str = "") -> AppTest:
    at.get("file_uploader")[0].set_value((filename, content, "text/plain"))
    at.text_input(key="profile-import-name").input(name)
    click(at, "Import")
    return at


@pytest.fixture
def rated(app):  # noqa: F811 - the fixture imported from test_app
    """An app with two movies of the first batch rated (5 and 3.5), on the Rate movies page."""
    at = app().run()
    assert_clean(at)
    keys = batch_keys(at)
    rate(at, keys[0], 5.0)
    rate(at, keys[1], 3.5)
    return at


# --- save, write-through, continue, rename, delete ----------------------------------------------------
def test_saving_writes_the_session_and_every_later_rating_at_once(rated):
    at = rated
    first, second, third, fourth = batch_items(at)[:4]
    assert "Not saved — save it on Your profiles" in sidebar_captions(at)
    save_as(open_profiles(at), "Alice")
    assert_clean(at)
    info = database().find("Alice", "synthetic")
    assert [(r.item_id, r.rating) for r in database().ratings(info)] == list(zip(ids_of([first, second]), [5.0, 3.5]))
    assert any(c.startswith("Saved as **Alice** · 2 rated") for c in sidebar_captions(at))

    # Back on Rate movies: each click is in SQLite before the next one.
    at.switch_page("app_pages/rate_movies.py").run()
    rate(at, f"batch-synthetic-{third}", 4.0)
    assert database().load(info).ratings_by_id() == dict(zip(ids_of([first, second, third]), [5.0, 3.5, 4.0]))
    rate(at, f"batch-synthetic-{first}", None)  # take a rating back
    assert list(database().load(info).ratings_by_id()) == ids_of([second, third])
    at.button(key=f"skip-{fourth}").click().run()
    assert database().load(info).skipped == tuple(ids_of([fourth]))
    assert any(c.startswith("Saved as **Alice** · 2 rated") for c in sidebar_captions(at))

    # Reset starts an unsaved profile; the saved one keeps its ratings.
    at.sidebar.button[0].click().run()
    assert profile_of(at).ratings == {} and profile_of(at).listener is None
    assert "Not saved — save it on Your profiles" in sidebar_captions(at)
    assert database().get(info).n_ratings == 2


def test_continue_rename_and_delete_with_confirmation(rated):
    at = rated
    session = dict(profile_of(at).ratings)
    save_as(open_profiles(at), "Bob")
    at.sidebar.button[0].click().run()  # reset: an empty, unsaved session
    assert profile_of(at).ratings == {}

    click(at, "Continue as Bob")
    assert profile_of(at).ratings == session and list(profile_of(at).ratings) == list(session)
    assert isinstance(profile_of(at).listener, saved.SavedLink)

    at.text_input(key=f"profile-rename-{database().find('Bob', 'synthetic').id}").input("Robert")
    click(at, "Rename")
    assert_clean(at)
    assert [p.name for p in database().list_profiles("synthetic")] == ["Robert"]
    assert any(c.startswith("Saved as **Robert**") for c in sidebar_captions(at))

    click(at, "Delete Robert…")
    assert database().list_profiles("synthetic")  # asked first, nothing deleted yet
    click(at, "Cancel")
    click(at, "Delete Robert…")
    click(at, "Yes, delete it")
    assert_clean(at)
    assert database().list_profiles("synthetic") == []
    assert profile_of(at).ratings == session and profile_of(at).listener is None  # the session keeps its ratings
    assert "Not saved — save it on Your profiles" in sidebar_captions(at)


def test_a_taken_name_is_refused_and_the_first_profile_kept(rated):
    at = save_as(open_profiles(rated), "Alice")
    save_as(at, "ALICE")
    assert any("already exists" in m for m in messages(at))
    assert [p.name for p in database().list_profiles()] == ["Alice"]


def test_a_profile_deleted_elsewhere_turns_the_session_unsaved_without_losing_ratings(rated):
    at = save_as(open_profiles(rated), "Alice")
    database().delete(database().find("Alice", "synthetic"))
    at.switch_page("app_pages/rate_movies.py").run()
    third = batch_items(at)[2]
    rate(at, f"batch-synthetic-{third}", 2.0)
    assert third in profile_of(at).ratings
    assert "Not saved — save it on Your profiles" in sidebar_captions(at)


# --- export and import -------------------------------------------------------------------------------------
def test_export_offers_the_saved_ratings_as_json_and_csv(rated, monkeypatch):
    offered: dict[str, tuple[str, str]] = {}
    real = st.download_button

    def capture(label, data, file_name=None, **kwargs):
        offered[label] = (file_name, data)
        return real(label, data, file_name=file_name, **kwargs)

    monkeypatch.setattr(st, "download_button", capture)
    first, second = batch_items(rated)[:2]
    at = save_as(open_profiles(rated), "Ann & Bob!")
    at.run()
    titles = load_dataset("synthetic").catalogue["display_title"]
    json_name, json_text = offered["JSON"]
    assert json_name == "ann-bob.json"
    payload = json.loads(json_text)
    assert payload["name"] == "Ann & Bob!" and payload["dataset"] == "synthetic"
    assert [(r["item_id"], r["rating"], r["title"]) for r in payload["ratings"]] == [
        (ids_of([first])[0], 5.0, titles.iloc[first]),
        (ids_of([second])[0], 3.5, titles.iloc[second]),
    ]
    csv_name, csv_text = offered["CSV"]
    lines = csv_text.splitlines()
    assert csv_name == "ann-bob.csv" and lines[0] == "item_id,rating,rated_at,title" and len(lines) == 3
    assert lines[1].startswith(f"{ids_of([first])[0]},5,") and lines[2].startswith(f"{ids_of([second])[0]},3.5,")


def test_import_of_a_good_file_saves_it(app):
    ids = ids_of([3, 1, 4])
    content = profile_to_json(ProfileData("Imported", "synthetic", tuple(Rating(i, v, 0.0) for i, v in zip(ids, [4.5, 2.0, 5.0]))))
    at = import_file(open_profiles(app().run()), "mine.json", content.encode())
    assert_clean(at)
    info = database().find("Imported", "synthetic")
    assert database().load(info).ratings_by_id() == dict(zip(ids, [4.5, 2.0, 5.0]))
    csv_text = "item_id,rating\n" + "\n".join(f"{i},{v}" for i, v in zip(ids, [1.0, 1.5, 2.0]))
    import_file(at, "mine.csv", csv_text.encode(), name="From CSV")
    assert database().load(database().find("From CSV", "synthetic")).ratings_by_id() == dict(zip(ids, [1.0, 1.5, 2.0]))


BAD_PROFILE_FILES = [  # (file name, content, "Save it as", words of the reason)
        ("bad.json", b"{not json", "", "not valid JSON"),
        ("foreign.json", b'{"format": "something-else"}', "", "not a recengine profile"),
        ("unknown.json", profile_to_json(ProfileData("X", "synthetic", (Rating(99_999_999, 4.0, 0.0),))).encode(), "", "not in synthetic"),
        ("scale.csv", b"item_id,rating\n1,7\n", "Y", "rating"),
        ("nan.csv", b"item_id,rating\n1,nan\n", "Y", "rating"),
        ("noname.csv", b"item_id,rating\n1,4\n", "", "carries no name"),
        ("empty.csv", b"", "Y", "empty"),
        ("binary.json", bytes(range(256)), "", "not UTF-8"),
        ("other-dataset.json", profile_to_json(ProfileData("Z", "ml-100k", (Rating(1, 4.0, 0.0),))).encode(), "", "not of 'synthetic'"),
        ("passwd.json", profile_to_json(ProfileData("../../etc/passwd", "synthetic", ())).encode(), "x" * 10_000, "characters long"),
]


def test_import_of_a_bad_file_explains_and_changes_nothing(app):
    at = open_profiles(app().run())
    for filename, content, name, reason in BAD_PROFILE_FILES:
        import_file(at, filename, content, name)
        assert not at.exception, filename
        assert len(at.error) == 1 and at.error[0].value.startswith("**Nothing imported:**"), (filename, messages(at))
        assert reason in at.error[0].value, (filename, at.error[0].value)
        assert "\x00" not in at.error[0].value and len(at.error[0].value) < 500, filename
        assert database().list_profiles() == [], filename


# --- hostile names ---------------------------------------------------------------------------------------
def profile_name_ok(name: str) -> bool:
    try:
        validate_profile_name(name)
        return True
    except ProfileError:
        return False


def test_every_hostile_text_as_a_profile_name_is_refused_plainly_or_stored_exactly(rated):
    at = open_profiles(rated)
    accepted = []
    for case, name in HOSTILE_TEXT.items():
        save_as(at, name)
        assert not at.exception, case
        if profile_name_ok(name):  # emoji, SQL-looking, path-looking text, numbers: just a name
            assert not at.error, (case, [e.value for e in at.error])
            accepted.append(name.strip())
            assert any(c.startswith("Saved as") for c in sidebar_captions(at)), case
        else:  # empty, whitespace, 10,000 characters, control characters
            assert len(at.error) == 1 and at.error[0].value.startswith("**Not saved:**"), case
            assert not set(at.error[0].value) & CONTROL and len(at.error[0].value) < 400, (case, at.error[0].value)
        assert sorted(p.name for p in database().list_profiles()) == sorted(accepted), case
    assert {"../../etc/passwd", "'; DROP TABLE ratings; --", "🎬🍿 Amélie 東京物語 Ωmega"} <= set(accepted)
    assert len(accepted) < len(HOSTILE_TEXT)
    assert all(database().get(database().find(name, "synthetic")).n_ratings == 2 for name in accepted)


def test_hostile_text_as_a_new_name_leaves_the_profile_as_it_was(rated):
    at = save_as(open_profiles(rated), "Fine")
    info = database().find("Fine", "synthetic")
    for case, name in HOSTILE_TEXT.items():
        if profile_name_ok(name):
            continue
        at.text_input(key=f"profile-rename-{info.id}").input(name)
        click(at, "Rename")
        assert len(at.error) == 1 and at.error[0].value.startswith("**Not renamed:**"), case
        assert not set(at.error[0].value) & CONTROL, case
        assert database().get(info).name == "Fine", case


# --- shared links --------------------------------------------------------------------------------------------
def query_dict(link: str) -> dict[str, str]:
    """A link's query parameters as AppTest takes them (decoded)."""
    return {key: unquote(value) for key, value in (pair.split("=", 1) for pair in link.split("?", 1)[-1].split("&"))}


def link_ratings() -> dict:
    ids = ids_of([0, 2, 5])
    return dict(zip(ids, [5.0, 1.0, 3.5]))


def test_the_share_tab_shows_a_link_that_loads_the_same_ratings(rated, app):  # noqa: F811
    at = save_as(open_profiles(rated), "Alice")
    link = at.code[0].value
    assert link.startswith("?dataset=synthetic&r=") and "name=Alice" in link  # relative: AppTest has no URL
    fresh = app()
    fresh.query_params.update(query_dict(link))
    fresh.run()
    assert_clean(fresh)
    assert profile_of(fresh).ratings == profile_of(at).ratings  # a new session gets them at once
    assert profile_of(fresh).listener is None  # unsaved
    assert "r" not in fresh.query_params and "name" not in fresh.query_params  # read once


def test_a_link_asks_before_replacing_the_session_ratings(rated):
    at = rated
    mine = dict(profile_of(at).ratings)
    query = profile_link(link_ratings(), "synthetic", name="Friend")
    at.query_params.update(query_dict(query))
    at.run()
    assert_clean(at)
    assert profile_of(at).ratings == mine
    assert any("A shared link carries 3 ratings" in m.value for m in at.markdown)
    click(at, "Keep mine")
    assert profile_of(at).ratings == mine and not any("shared link carries" in m.value for m in at.markdown)

    at.query_params.update(query_dict(query))
    at.run()  # the same link again in this session: already answered
    assert not any("shared link carries" in m.value for m in at.markdown)
    at.query_params.update(query_dict(profile_link(link_ratings(), "synthetic", name="Friend, again")))
    at.run()
    click(at, "Load the shared ratings")
    assert_clean(at)
    ids = load_dataset("synthetic").item_map.ids.tolist()
    assert profile_of(at).ratings == {ids.index(i): v for i, v in link_ratings().items()}


BAD_LINKS = [
        {"dataset": "synthetic", "r": ""},
        {"dataset": "synthetic", "r": "1:nan"},
        {"dataset": "synthetic", "r": "1:99"},
        {"dataset": "synthetic", "r": "99999999:4"},
        {"dataset": "../../etc/passwd", "r": "1:4"},
        {"dataset": "synthetic", "r": "1:4", "name": "\x00\x1b[31m"},
        {"dataset": "synthetic", "r": "'; DROP TABLE ratings;--:4"},
        {"dataset": "synthetic", "r": ",".join(f"{i}:4" for i in range(1, 400))},
        {"dataset": "synthetic", "r": "🎬:4"},
]


def test_a_bad_link_is_a_warning_and_changes_nothing(app):
    for params in BAD_LINKS:
        at = app()
        at.query_params.update(params)
        at.run()
        assert not at.exception and not at.error, params
        assert any("This link's ratings could not be loaded" in w.value for w in at.warning), params
        assert all("\x00" not in w.value and "\x1b" not in w.value for w in at.warning), params
        assert profile_of(at).ratings == {}, params


# --- uploads -------------------------------------------------------------------------------------------------
GOOD_UPLOAD = b"reviewer,film,stars,time\n" + b"".join(
    f"u{u},m{m},{(u * 7 + m * 3) % 5 + 1},{1_600_000_000 + u * 100 + m}\n".encode() for u in range(12) for m in range(15) if (u + m) % 3
)


def open_upload(at: AppTest) -> AppTest:
    at.switch_page(UPLOAD).run()
    assert_clean(at)
    assert at.title[0].value == "Your data"
    return at


def upload_ratings(at: AppTest, filename: str, content: bytes) -> AppTest:
    at.get("file_uploader")[0].set_value((filename, content, "text/plain")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_good_upload_becomes_a_dataset_in_the_picker(app):
    at = upload_ratings(open_upload(app().run()), "My Ratings.csv", GOOD_UPLOAD)
    assert_clean(at)
    roles = {box.label: box.value for box in at.selectbox if box.key and box.key.startswith("upload-column-")}
    assert roles == {"User id": "reviewer", "Item id": "film", "Rating": "stars", "Timestamp (optional)": "time"}
    expected = sum(1 for u in range(12) for m in range(15) if (u + m) % 3)
    assert at.success[0].value.startswith(f"{expected} ratings from 12 users on 15 items, scale 1-5 (inferred)")
    assert at.text_input(key="upload-name-My Ratings.csv").value == "my-ratings"
    click(at, "Import")
    assert_clean(at)
    assert upload.upload_names() == ["my-ratings"]
    assert "my-ratings" in at.sidebar.selectbox(key=state.DATASET_KEY).options
    click(at, "Switch to my-ratings now")
    assert_clean(at)
    assert at.sidebar.selectbox(key=state.DATASET_KEY).value == "my-ratings"
    # Delete it again (after switching away: the dataset in use is not deleted from under the pages).
    at.selectbox(key="upload-delete-pick").select("my-ratings").run()
    click(at, "Yes, delete my-ratings")
    assert upload.upload_names() == ["my-ratings"] and any("dataset in use" in e.value for e in at.error)
    at.sidebar.selectbox(key=state.DATASET_KEY).select("synthetic").run()
    at.selectbox(key="upload-delete-pick").select("my-ratings").run()
    click(at, "Yes, delete my-ratings")
    assert_clean(at)
    assert upload.upload_names() == [] and "my-ratings" not in at.sidebar.selectbox(key=state.DATASET_KEY).options


def test_changing_the_column_mapping_and_scale_is_used(app):
    content = b"a\tb\tc\td\n" + b"".join(f"{u}\t{m}\t{(u + m) % 10 + 1}\t{u}\n".encode() for u in range(6) for m in range(8))
    at = upload_ratings(open_upload(app().run()), "ten.tsv", content)
    table = at.dataframe[-1].value
    assert list(table["problem"]) and table["row"].isna().all()  # no column names it knows: say which role is missing
    for role, column in (("user", "a"), ("item", "b"), ("rating", "c")):
        at.selectbox(key=f"upload-column-{role}-ten.tsv").select(column).run()
    assert at.selectbox(key="upload-scale").options[:3] == ["Guess (1-5 or 0.5-5)", "1 to 5", "0.5 to 5"]
    assert at.error  # ratings up to 10 are outside the guessed scales
    at.selectbox(key="upload-scale").select("1 to 10").run()
    assert_clean(at)
    assert at.success[0].value.startswith("48 ratings from 6 users on 8 items, scale 1-10")


BAD_UPLOADS = [  # (content, row named, column named, words of the first problem)
        (b"user,item,rating\n1,1,5\n2,1,abc\n", 3, "rating", "not a number"),
        (b"user,item,rating\n1,1,5\n2,1,9\n", None, "rating", "neither 1-5 nor 0.5-5"),
        (b"user,item,rating\n1,1,5\n,1,4\n", 3, "user", "empty user id"),
        (b"user,item,rating\n", None, None, "no data rows"),
        (b"", None, None, "empty"),
        (b"user,item,rating\n1,1,5\n2,\xff\xfe,4\n", 3, None, "not valid utf-8"),
        (b"\x00\x01\x02binary", None, None, "not a text file"),
]


def test_a_bad_upload_names_row_and_column_and_adds_nothing(app):
    at = open_upload(app().run())
    for number, (content, row, column, words) in enumerate(BAD_UPLOADS):
        upload_ratings(at, f"bad{number}.csv", content)
        assert len(at.error) == 1 and at.error[0].value.startswith("**Refused, nothing imported:**"), content
        table = at.dataframe[-1].value  # after the preview, when the file could be read as a table
        first = table.iloc[0]
        assert words in first["problem"].lower(), (content, list(table["problem"]))
        assert (None if pd.isna(first["row"]) else int(first["row"])) == row, content
        if column is not None:
            assert first["column"] == column, content
        assert not any(b.label == "Import" for b in at.button), content
        assert upload.upload_names() == []


def test_every_hostile_text_as_an_upload_name_is_refused_or_used_as_is(app):
    at = upload_ratings(open_upload(app().run()), "good.csv", GOOD_UPLOAD)
    cases = {**HOSTILE_TEXT, "built-in": "ml-100k", "synthetic": "synthetic", "dots": "..", "slash": "a/b"}
    accepted = []
    for case, name in cases.items():
        at.text_input(key="upload-name-good.csv").input(name)
        click(at, "Import")
        try:
            accepted.append(upload.validate_upload_name(name))  # "nan", "inf", "1e308", 2**63 are fine names
        except ValueError:
            assert len(at.error) == 1 and at.error[0].value.startswith("**Not imported:**"), case
            assert len(at.error[0].value) < 500 and not set(at.error[0].value) & CONTROL, case
        else:
            assert not at.error, case
        assert upload.upload_names() == sorted(accepted), case
    assert sorted(path.name for path in upload.uploads_dir().iterdir() if not path.name.startswith(".")) == sorted(accepted)
    assert not (upload.uploads_dir().parent.parent / "etc").exists()


def test_hostile_upload_file_names_are_shown_safely(app):
    at = upload_ratings(open_upload(app().run()), "../../etc/passwd\x1b[31m🎬.csv", b"user,item,rating\n1,1,x\n")
    assert len(at.error) == 1
    assert "\x1b" not in " ".join(c.value for c in at.caption)
    assert upload.upload_names() == []
    assert at.dataframe[-1].value["row"].tolist() == [2]


# --- the session Profile's listener (no app needed) ----------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def rated(self, item_idx, rating):
        self.calls.append(("rated", item_idx, rating))

    def unrated(self, item_idx):
        self.calls.append(("unrated", item_idx))

    def skipped(self, item_idx):
        self.calls.append(("skipped", item_idx))

    def unskipped(self, item_idx):
        self.calls.append(("unskipped", item_idx))


def test_the_profile_tells_its_listener_every_change_and_reset_unlinks():
    recorder = Recorder()
    profile = state.Profile()
    profile.load({7: 4.0, 2: 5.0}, {9}, recorder)
    assert list(profile.ratings.items()) == [(7, 4.0), (2, 5.0)] and profile.skipped == {9}
    assert recorder.calls == []  # loading comes from the saved profile: nothing to write back
    profile.rate(np.int64(3), 4.5)
    profile.unrate(7)
    profile.unrate(7)  # nothing to forget: not reported
    profile.skip(2)
    profile.unskip(9)
    profile.unskip(9)  # not skipped any more: not reported
    assert recorder.calls == [("rated", 3, 4.5), ("unrated", 7), ("skipped", 2), ("unskipped", 9)]
    assert profile.ratings == {3: 4.5} and profile.skipped == {2}
    profile.reset()
    assert profile.listener is None and profile.ratings == {} and profile.skipped == set()
    profile.rate(1, 1.0)
    assert len(recorder.calls) == 4

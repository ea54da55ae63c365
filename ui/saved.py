"""Saved profiles and uploads in the app: the glue between the session and `recengine.profiles` /
`recengine.data.upload`.

- One `ProfileStore` per database file and process (`store()`), at the library's own path
  (`recengine.profiles.default_profiles_path()`: $RECENGINE_PROFILES_DB, else the user data folder).
- A session profile (`ui.state.Profile`) is *linked* to a saved profile by its `listener`, a
  `SavedLink`: every rate / unrate / skip / unskip is written to SQLite as it is made, so a closed
  browser tab loses nothing. "Reset profile" unlinks (the saved profile keeps its ratings).
- A write that fails (the profile was deleted in another tab, the database is locked for a
  minute) never stops the page: the session keeps the change and `write_problem()` says what
  was not saved.
- Shared links (`?dataset=…&r=ITEM:RATING,…&name=…`): `take_shared_link()` reads them once per
  session; the ratings are loaded at once when the session has none on that dataset, otherwise
  the person is asked first (`pending_link()`), so a link never silently replaces ratings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from recengine.data import upload
from recengine.data.dataset import Dataset
from recengine.data.movielens import dataset_names
from recengine.profiles import (
    ProfileData,
    ProfileError,
    ProfileInfo,
    ProfileNotFoundError,
    ProfileStore,
    ProfileStoreError,
    Rating,
    default_profiles_path,
    item_id_of,
    parse_profile_link,
)
from ui import cached, state

_WRITE_PROBLEM_KEY = "saved-write-problem"
_PENDING_LINK_KEY = "saved-pending-link"
_LINK_SEEN_KEY = "saved-link-seen"
#: Query parameters of a shared link besides "dataset" (which also picks the session's dataset).
LINK_PARAMS = ("r", "name")


# --- the store -------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _store_at(path: str) -> ProfileStore:
    return ProfileStore(path)


def store() -> ProfileStore:
    """The process's ProfileStore for the configured database file (shared by every session;
    each thread gets its own SQLite connection inside the store)."""
    return _store_at(str(default_profiles_path()))


# --- linking a session profile to a saved one ------------------------------------------------------
@dataclass(frozen=True)
class SavedLink:
    """Writes a session profile's changes through to saved profile `profile_id` of `dataset`.

    Item indices are turned into the dataset's original item ids (`item_id_of`), so the saved
    profile survives re-indexing. Implements `ui.state.ProfileListener`.
    """

    profile_id: int
    dataset: str

    def _write(self, what: str, action) -> None:
        try:
            action(store(), cached.dataset(self.dataset))
            st.session_state.pop(_WRITE_PROBLEM_KEY, None)
        except ProfileNotFoundError:
            state.profile(self.dataset).listener = None  # deleted elsewhere: the session goes on unsaved
            st.session_state[_WRITE_PROBLEM_KEY] = (
                f"The saved profile was deleted (in another tab?), so your last {what} was not saved. "
                "Your ratings are still here: save them again on Your profiles."
            )
        except (ProfileError, ProfileStoreError) as error:
            st.session_state[_WRITE_PROBLEM_KEY] = f"Your last {what} was not saved: {error}"

    def rated(self, item_idx: int, rating: float) -> None:
        self._write("rating", lambda db, data: db.rate(self.profile_id, item_id_of(data, item_idx), rating, scale=data.rating_scale))

    def unrated(self, item_idx: int) -> None:
        self._write("change", lambda db, data: db.unrate(self.profile_id, item_id_of(data, item_idx)))

    def skipped(self, item_idx: int) -> None:
        self._write("'not seen'", lambda db, data: db.skip(self.profile_id, item_id_of(data, item_idx)))

    def unskipped(self, item_idx: int) -> None:
        self._write("change", lambda db, data: db.unskip(self.profile_id, item_id_of(data, item_idx)))


def write_problem() -> str | None:
    """Why the last write-through failed, if it did (cleared by the next successful write)."""
    return st.session_state.get(_WRITE_PROBLEM_KEY)


def active(dataset: str | None = None) -> ProfileInfo | None:
    """The saved profile the session's profile of `dataset` is linked to, or None (unsaved).
    A link to a profile deleted elsewhere is dropped here."""
    dataset = dataset or state.current_dataset()
    link = state.profile(dataset).listener
    if not isinstance(link, SavedLink):
        return None
    try:
        return store().get(link.profile_id)
    except ProfileNotFoundError:
        state.profile(dataset).listener = None
        return None


def session_data(name: str, dataset: str) -> ProfileData:
    """The session's ratings (in the order rated) and skipped items of `dataset` as ProfileData
    named `name`, with original item ids."""
    data = cached.dataset(dataset)
    profile = state.profile(dataset)
    now = time.time()
    ids = data.item_map.ids
    rated = list(profile.ratings)
    rated_ids = ids[np.asarray(rated, dtype=np.int64)].tolist() if rated else []
    skipped_ids = ids[np.asarray(sorted(profile.skipped), dtype=np.int64)].tolist() if profile.skipped else []
    ratings = tuple(Rating(item, float(profile.ratings[idx]), now) for item, idx in zip(rated_ids, rated))
    return ProfileData(name, dataset, ratings, tuple(skipped_ids))


def save_session_as(name: str, dataset: str) -> ProfileInfo:
    """Save the session's profile of `dataset` as a new saved profile `name` and link the session
    to it. ProfileError (a ValueError) for a bad or taken name; nothing is written then."""
    info = store().import_profile(session_data(name, dataset))
    state.profile(dataset).listener = SavedLink(info.id, dataset)
    return info


def continue_profile(profile_id: int) -> tuple[ProfileInfo, list]:
    """Load saved profile `profile_id` into the session (replacing the session's ratings of its
    dataset) and link them. Returns its info and the item ids its dataset no longer has."""
    db = store()
    info = db.get(profile_id)
    saved = db.load(profile_id)
    data = cached.dataset(info.dataset)
    ratings, missing = saved.item_ratings(data)
    state.profile(info.dataset).load(ratings, saved.skipped_items(data), SavedLink(info.id, info.dataset))
    return info, missing


def load_into_session(data: ProfileData, dataset: Dataset) -> list:
    """Put imported or shared ratings into the session's profile of their dataset, unsaved.
    Returns the item ids the dataset lacks (none after a validated import)."""
    ratings, missing = data.item_ratings(dataset)
    state.profile(dataset.name).load(ratings, data.skipped_items(dataset))
    return missing


def titles_of(dataset: Dataset) -> dict:
    """{original item id: display title}, for readable exports."""
    return dict(zip(dataset.item_map.ids.tolist(), dataset.catalogue["display_title"].tolist()))


# --- shared links ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SharedLink:
    """A validated link waiting to be applied: its ratings and the dataset they are of."""

    data: ProfileData


def take_shared_link() -> None:
    """Read a shared link from the URL once per session (call before the sidebar is drawn).

    The ratings go straight into the session when it has none on that dataset (the usual case:
    a link opens a new tab, a new session); otherwise they wait for a yes/no (`pending_link`).
    The link's own parameters are then removed from the URL, so a rerun does not ask again.
    A bad link is a warning, never an error page.
    """
    params = st.query_params
    if "r" not in params:
        return
    raw = {key: params.get_all(key) for key in ("dataset", *LINK_PARAMS) if key in params}
    signature = repr(sorted(raw.items()))
    for key in LINK_PARAMS:
        if key in params:
            del params[key]
    if st.session_state.get(_LINK_SEEN_KEY) == signature:
        return
    st.session_state[_LINK_SEEN_KEY] = signature
    try:
        name = (raw.get("dataset") or [""])[0].strip()
        if name not in dataset_names():
            raise ProfileError("the link is for a dataset this app does not have; ask for a new link")
        data = parse_profile_link(raw, dataset=cached.dataset(name))
    except (ProfileError, FileNotFoundError, ValueError) as error:
        st.warning(f"**This link's ratings could not be loaded.** {error}", icon="🔗")
        return
    if state.profile(data.dataset).ratings:
        st.session_state[_PENDING_LINK_KEY] = SharedLink(data)
    else:
        apply_link(data)


def pending_link() -> SharedLink | None:
    """A shared link that waits for the person's yes or no."""
    return st.session_state.get(_PENDING_LINK_KEY)


def apply_link(data: ProfileData | None = None) -> None:
    """Load a shared link's ratings into the session (unsaved) and switch to its dataset
    (a button callback: the pending link when `data` is None)."""
    if data is None:
        pending = st.session_state.pop(_PENDING_LINK_KEY, None)
        if pending is None:
            return
        data = pending.data
    load_into_session(data, cached.dataset(data.dataset))
    st.session_state[state.DATASET_KEY] = data.dataset
    st.toast(f"Loaded {len(data.ratings)} ratings from a shared link ({data.name}). Not saved yet.", icon="🔗")


def dismiss_link() -> None:
    """Forget a pending shared link (a button callback)."""
    st.session_state.pop(_PENDING_LINK_KEY, None)


def link_url(query: str, *, here: str, to: str = "") -> str:
    """The address of the app's page `to` (its URL path, "" for the default page) with `query`
    ("dataset=…&r=…"), built from the browser's URL of the page `here`; relative when unknown."""
    url = str(getattr(st.context, "url", "") or "")
    base = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if base.endswith(f"/{here}"):
        base = base[: -len(here)]
    elif base:
        base += "/"
    return f"{base}{to}?{query}" if base else f"?{query}"


# --- uploads ---------------------------------------------------------------------------------------
@st.cache_resource(max_entries=2, show_spinner="Reading the file…")
def preview_upload(data: bytes, filename: str, encoding: str = "auto") -> upload.UploadPreview:
    """`recengine.data.upload.preview_upload`, read once per file and encoding (not on every rerun)."""
    return upload.preview_upload(data, filename, encoding)


@st.cache_resource(max_entries=2, show_spinner="Checking every row…")
def parse_upload(
    data: bytes, filename: str, columns: tuple[tuple[str, str], ...], scale: tuple[float, float] | None,
    encoding: str, items: bytes | None, items_filename: str | None,
) -> upload.ParsedUpload:
    """`recengine.data.upload.parse_upload` of an uploaded file, parsed once per file and choice
    of columns, scale and encoding, not on every rerun (a large file takes seconds). The result is
    shared read-only; an UploadError is raised again on each call (errors are not cached)."""
    return upload.parse_upload(
        data, filename=filename, columns=dict(columns), scale=scale, encoding=encoding,
        items=items, items_filename=items_filename,
    )  # fmt: skip


def problems_table(error: upload.UploadError) -> pd.DataFrame:
    """An UploadError's problems as a table: file, row (blank for the whole file), column, problem."""
    return pd.DataFrame(
        {
            "file": [p.file for p in error.problems],
            "row": pd.array([p.row for p in error.problems], dtype="Int64"),
            "column": [p.column or "" for p in error.problems],
            "problem": [p.message for p in error.problems],
        }
    )


def refresh_datasets() -> None:
    """Forget the cached dataset list and the upload's cached Dataset (after an import or delete)."""
    cached.datasets.clear()
    cached.dataset.clear()
